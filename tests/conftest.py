import pytest

from calmix.tokenizer import train_tokenizer
from calmix.world import World


@pytest.fixture(scope="session")
def world_tokenizer():
    """A small byte-level BPE trained on the world, as the workflow trains it."""
    return train_tokenizer(World(0).documents("pretrain", 300, seed=0), vocab_size=400)
