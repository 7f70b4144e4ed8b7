import pytest

from calmix.tokenizer import train_tokenizer
from calmix.world import World


@pytest.fixture(scope="session")
def world_tokenizer():
    """A small byte-level BPE trained on the world, as the workflow trains it."""
    return train_tokenizer(World(0).documents("pretrain", 300, seed=0), vocab_size=400)


@pytest.fixture(scope="session")
def make_shard(world_tokenizer):
    """Tokenize texts with the world tokenizer and build one shard at path; returns its manifest."""
    from calmix.shards import build_shard, tokenize_corpus

    def make(texts, path, *, nsamples=16, seqlen=32, seed=0, sampling="windows", bos="none", tokenizer=None):
        tok = tokenizer or world_tokenizer
        docs = [{"id": f"doc:{i}", "text": t} for i, t in enumerate(texts)]
        return build_shard(
            tokenize_corpus(docs, tok, "test"), [d["id"] for d in docs], nsamples=nsamples, seqlen=seqlen,
            seed=seed, source="test", spec={"kind": "world"}, sampling=sampling, bos=bos,
            bos_id=tok.bos_token_id, eos_id=tok.eos_token_id, tokens_sha256="t" * 64,
            tokenizer_sha256="k" * 64, path=path,
        )

    return make
