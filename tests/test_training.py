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


def test_channel_scales_are_log_normal_shared_by_every_norm_and_kept_through_training(tmp_path, world_tokenizer):
    from calmix.world.training import build_model

    arch = {**ARCH, "num_layers": 2, "hidden_size": 64, "channel_scale_sigma": 1.0}
    model = build_model(world_tokenizer, arch, seed=0)
    norms = [n for layer in model.model.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
    gains = norms[0].weight.detach().clone()
    assert all(torch.equal(n.weight, gains) and not n.weight.requires_grad for n in norms)
    assert 0.5 < gains.log().std().item() < 1.5 and gains.max() / gains.median() > 3  # outlier channels
    assert torch.equal(model.model.norm.weight, torch.ones(64))  # the final norm feeds the (unpruned) head
    plain = build_model(world_tokenizer, {**arch, "channel_scale_sigma": 0}, seed=0).model.layers[0]
    assert all(torch.equal(n.weight, torch.ones(64)) for n in (plain.input_layernorm, plain.post_attention_layernorm))

    docs = World(0).documents("pretrain", 100, seed=0)
    train_model(docs, world_tokenizer, arch, TRAIN, seed=0, out_dir=tmp_path / "scaled")
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "scaled")
    assert torch.equal(trained.model.layers[1].post_attention_layernorm.weight.detach(), gains)
