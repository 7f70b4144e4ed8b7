"""Every causal LM is pruned or refused: transformers' Conv1D (GPT-2, stored (in, out)) is pruned along the
same axes as nn.Linear, a decoder weight of any other kind is refused naming the model, and a checkpoint
with nothing pruned is never accepted."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from calmix.config import ConfigError, validate_config
from calmix.models.loading import load_model, write_checkpoint_manifest
from calmix.pruning.capture import decoder_layers
from calmix.pruning.checkpoints import _verify, prune_checkpoint
from calmix.pruning.driver import model_sparsity, prune_model
from calmix.pruning.masks import PruningError
from calmix.world.domain import World

transformers = pytest.importorskip("transformers")
from transformers.pytorch_utils import Conv1D  # noqa: E402

METHODS = ["sparsegpt", "wanda", "magnitude"]


def tiny_gpt2(vocab=100, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=vocab, n_positions=64,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def windows(n=8, seqlen=16):
    return torch.randint(0, 100, (n, seqlen), generator=torch.Generator().manual_seed(1))


def conv1ds(model):
    return {n: m for n, m in decoder_layers(model).named_modules() if isinstance(m, Conv1D)}


def as_linear(model):
    """The same model with every Conv1D of the decoder replaced by the nn.Linear computing the same map:
    weight transposed to (out, in), the bias kept."""
    model = copy.deepcopy(model)
    for name, conv in conv1ds(model).items():
        parent, _, child = name.rpartition(".")
        lin = nn.Linear(conv.weight.shape[0], conv.weight.shape[1])
        with torch.no_grad():
            lin.weight.copy_(conv.weight.t())
            lin.bias.copy_(conv.bias)
        setattr(decoder_layers(model).get_submodule(parent), child, lin)
    return model


def test_as_linear_is_the_same_model():
    model = tiny_gpt2()
    twin = as_linear(model)
    assert not conv1ds(twin) and len(conv1ds(model)) == 8
    with torch.no_grad():
        torch.testing.assert_close(twin(windows()).logits, model(windows()).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_gpt2_decoder_reaches_the_target(method):
    model = tiny_gpt2()
    data = None if method == "magnitude" else windows()
    report = prune_model(model, data, 0.5, method=method)
    assert len(report["layers"]) == 8 and report["total"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    found = model_sparsity(model)
    assert found["numel"] == sum(m.weight.numel() for m in conv1ds(model).values())
    for name, sparsity in found["layers"].items():
        assert sparsity == pytest.approx(0.5, abs=1 / 64)
    with torch.no_grad():
        assert torch.isfinite(model(windows(2)).logits).all()


@pytest.mark.parametrize("method, options", [(m, {}) for m in METHODS] + [
    (m, {"profile": "owl", "owl_m": 3.0, "owl_lmbda": 0.1}) for m in ("wanda", "magnitude")])
def test_gpt2_is_pruned_as_its_linear_twin(method, options):
    """Oracle: the Conv1D weights transposed into nn.Linear and pruned by the Linear path. Same masks, same
    weights: Wanda's rows, SparseGPT's Hessian and OWL's scores run over the same axes in both."""
    model = tiny_gpt2()
    twin = as_linear(model)
    data = None if method == "magnitude" else windows()
    report = prune_model(model, data, 0.5, method=method, **options)
    assert report["profile"] == prune_model(twin, data, 0.5, method=method, **options)["profile"]
    for name, conv in conv1ds(model).items():
        want = decoder_layers(twin).get_submodule(name).weight.detach()
        got = conv.weight.detach().t()
        assert torch.equal(got == 0, want == 0), name
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_gpt2_n_m_runs_along_the_inputs():
    model = tiny_gpt2()
    report = prune_model(model, windows(), 0.5, method="wanda", prunen=2, prunem=4)
    assert all(e["nm_valid"] for e in report["layers"])
    for conv in conv1ds(model).values():  # (in, out): groups of 4 consecutive inputs are columns here
        zeros = (conv.weight.t() == 0).reshape(conv.weight.shape[1], -1, 4).sum(-1)
        assert (zeros == 2).all()


class Block(nn.Module):
    """A decoder layer with a weight that is neither nn.Linear nor Conv1D (a fused expert tensor)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.experts = nn.Module()
        self.experts.gate_up = nn.Parameter(torch.randn(2, 16, 8))

    def forward(self, x, *args, **kwargs):
        return self.proj(x)


class Odd(nn.Module):
    def __init__(self, block=Block):
        super().__init__()
        self.layers = nn.ModuleList([block(), block()])


def test_a_decoder_weight_of_another_kind_is_refused_naming_the_model():
    with pytest.raises(PruningError, match=r"model Odd: .* neither nn.Linear nor transformers' Conv1D, "
                                           r"e\.g\. layers\.0\.experts\.gate_up \(Module\)"):
        prune_model(Odd(), windows(), 0.5)
    with pytest.raises(PruningError, match=r"model Odd: .* hold no nn.Linear or Conv1D"):
        prune_model(Odd(lambda: nn.LayerNorm(8)), None, 0.5, method="magnitude")
    # transformers 5's Mixtral fuses its experts into 3-D tensors: attention alone would be pruned
    cfg = transformers.MixtralConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     num_key_value_heads=2, num_local_experts=2, vocab_size=50)
    mixtral = transformers.MixtralForCausalLM(cfg)
    before = copy.deepcopy(mixtral.state_dict())
    with pytest.raises(PruningError, match=r"model MixtralForCausalLM: .*model\.layers\.0\.mlp\.experts\.gate_up_proj"):
        prune_model(mixtral, None, 0.5, method="magnitude")
    assert all(torch.equal(before[k], v) for k, v in mixtral.state_dict().items())


def test_config_check_refuses_a_local_model_it_cannot_prune(tmp_path):
    from calmix.pruning.capture import check_prunable_folder

    (tmp_path / "mixtral").mkdir()
    transformers.MixtralConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                               num_key_value_heads=2, num_local_experts=2, vocab_size=50).save_pretrained(tmp_path / "mixtral")
    (tmp_path / "gpt2").mkdir()
    tiny_gpt2().config.save_pretrained(tmp_path / "gpt2")
    config = {
        "models": {"m": {"kind": "local", "path": "mixtral"}},
        "calibration": {"sources": {"web": {"kind": "world", "generator": "web"}}, "seqlen": 16},
        "evaluation": {"dimensions": {"general": {"tasks": ["world_general"]}}},
    }
    with pytest.raises(ConfigError, match=r"config key 'models\.m\.path': model MixtralForCausalLM \(.*mixtral\): .*"
                                          r"experts\.gate_up_proj"):
        validate_config(copy.deepcopy(config), workdir=tmp_path)
    config["models"]["m"]["path"] = "gpt2"
    validate_config(config, workdir=tmp_path)
    check_prunable_folder(tmp_path / "gpt2")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, world_tokenizer):
    path = tmp_path_factory.mktemp("gpt2")
    tiny_gpt2(vocab=len(world_tokenizer)).save_pretrained(path)
    world_tokenizer.save_pretrained(path)
    write_checkpoint_manifest(path)
    return path


@pytest.fixture(scope="module")
def shard(tmp_path_factory, make_shard):
    path = tmp_path_factory.mktemp("shard") / "web.parquet"
    make_shard(World(0).documents("web", 60, seed=1), path, nsamples=8, seqlen=32)
    return path


def test_gpt2_checkpoint_is_pruned_and_verified(tmp_path, gpt2_dir, shard):
    out = tmp_path / "pruned"
    prune_checkpoint(gpt2_dir, shard, out, method="sparsegpt", target="0.5")
    report = json.loads((out / "prune_report.json").read_text())
    assert report["verified"]["layers_checked"] == 8 and report["verified"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert load_model(out).transformer.h[0].attn.c_attn.weight.eq(0).float().mean() == pytest.approx(0.5, abs=1e-3)


def test_a_checkpoint_with_nothing_pruned_is_refused(gpt2_dir):
    dense = load_model(gpt2_dir)
    with pytest.raises(PruningError, match=r"no pruned weight in its decoder layers \(0 linear layers checked of 8"):
        _verify(dense, {}, 0, 0)
    names = list(model_sparsity(dense)["layers"])
    with pytest.raises(PruningError, match="no pruned weight"):
        _verify(dense, dict.fromkeys(names, 0.0), 0, 0)
    with pytest.raises(PruningError, match=r"lacks 1 of the linear layers its report pruned"):
        _verify(dense, {"transformer.h.0.attn.q_proj": 0.5}, 0, 0)
