"""Training the world model: seeded, loss goes down, and the folder loads with transformers."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from calmix.world.training import train_model
from calmix.world.domain import World

ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2, "max_position_embeddings": 64}
TRAIN = {"steps": 30, "batch_size": 8, "seqlen": 32, "lr": 0.003, "bf16": False}


def test_training_is_seeded_and_learns(tmp_path, world_tokenizer):
    docs = World(0).documents("pretrain", 100, seed=0)
    first = train_model(docs, world_tokenizer, ARCH, TRAIN, seed=0, out_dir=tmp_path / "a")
    train_model(docs, world_tokenizer, ARCH, TRAIN, seed=0, out_dir=tmp_path / "b")
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    uniform = torch.log(torch.tensor(float(len(world_tokenizer)))).item()
    assert first["final_loss"] < uniform - 0.4
    tok = AutoTokenizer.from_pretrained(tmp_path / "a")
    assert tok.eos_token == "</s>" and tok.bos_token == "<s>"
