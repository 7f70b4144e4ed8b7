"""OWL (calmix.pruning.owl) against an independent computation from plain forward passes, and the
per-layer sparsity it hands the driver, for every method."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from calmix.pruning import owl, registry
from calmix.pruning.capture import decoder_layers
from calmix.pruning.driver import model_sparsity, prune_model
from test_pruning import direct_hessians, tiny_llama, windows


def layer_of(name: str) -> int:
    return int(name.split(".")[2])


def test_layer_sparsities_keep_the_mean_and_order_and_span():
    ratios = [0.02, 0.10, 0.04, 0.07]
    got = owl.layer_sparsities(ratios, 0.6, 0.08)
    assert np.mean(got) == pytest.approx(0.6, abs=1e-12)
    assert max(got) - min(got) == pytest.approx(0.16)  # the span is 2 * lmbda
    assert np.argsort(got).tolist() == np.argsort(ratios)[::-1].tolist()  # more outliers, less sparsity
    # the map is linear in the ratios: equal steps in ratio are equal steps in sparsity
    assert (got[0] - got[2]) / (got[2] - got[3]) == pytest.approx((ratios[2] - ratios[0]) / (ratios[3] - ratios[2]))
    assert owl.layer_sparsities([0.05, 0.05], 0.5, 0.1) == [0.5, 0.5]
    with pytest.raises(ValueError, match="owl_lmbda"):
        owl.layer_sparsities(ratios, 0.95, 0.08)


def test_outlier_ratio_counts_scores_above_m_times_the_pooled_mean():
    scores = [torch.tensor([[1.0, 1.0], [1.0, 13.0]]), torch.tensor([1.0, 1.0, 1.0, 1.0])]
    # pooled mean = 20 / 8 = 2.5; above 5 x 2.5 = 12.5: one score of eight
    assert owl.outlier_ratio(scores, 5) == 1 / 8
    assert owl.outlier_ratio(scores, 6) == 0.0


def oracle_ratios(model, ids, m):
    """OWL's ratios from plain forward passes of the dense model: Wanda scores |W| * ||X_j||, pooled per layer."""
    H = direct_hessians(model, [ids], nsamples=ids.shape[0])
    pooled = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and name in H:
            score = mod.weight.detach().double().abs() * (torch.diagonal(H[name]) / 2).sqrt()
            pooled.setdefault(layer_of(name), []).append(score.reshape(-1))
    ratios = []
    for index in sorted(pooled):
        flat = torch.cat(pooled[index])
        ratios.append(float((flat > m * flat.mean()).sum()) / flat.numel())
    return ratios


@pytest.mark.parametrize("method", ["sparsegpt", "wanda", "magnitude"])
def test_owl_gives_each_layer_its_own_sparsity_and_the_mean_the_target(method):
    dense, ids = tiny_llama(), windows(16, 32)
    model = copy.deepcopy(dense)
    data = None if method == "magnitude" else ids
    report = prune_model(model, data, 0.6, method=method, profile="owl", owl_m=3.0, owl_lmbda=0.1)
    profile = report["profile"]
    assert profile["name"] == "owl" and profile["owl_m"] == 3.0 and profile["owl_lmbda"] == 0.1
    targets = profile["layer_sparsities"]
    assert len(targets) == len(decoder_layers(dense)) and np.mean(targets) == pytest.approx(0.6)
    assert targets[0] != targets[1]  # the two layers differ in outliers, so in sparsity
    if method == "magnitude":  # data-free: the scores are the weights' magnitudes
        want = [owl.outlier_ratio([m.weight.abs() for m in layer.modules() if isinstance(m, nn.Linear)], 3.0)
                for layer in decoder_layers(dense)]
        assert profile["outlier_ratios"] == want
    else:
        np.testing.assert_allclose(profile["outlier_ratios"], oracle_ratios(dense, ids, 3.0), atol=2e-3)
    found = model_sparsity(model)["layers"]
    for entry in report["layers"]:
        target = targets[layer_of(entry["name"])]
        assert entry["target_sparsity"] == target
        assert found[entry["name"]] == pytest.approx(target, abs=1 / 64 + 1e-9)


def test_owl_with_equal_outliers_is_uniform_and_refuses_n_m():
    model = tiny_llama()
    with pytest.raises(ValueError, match="N:M"):
        prune_model(model, windows(4, 8), 0.5, method="wanda", profile="owl", prunen=2, prunem=4, owl_m=5, owl_lmbda=0.08)
    with pytest.raises(ValueError, match="non-uniform"):
        prune_model(model, windows(4, 8), 0.5, method="wanda", owl_m=5)
    with pytest.raises(ValueError, match="unknown sparsity profile 'bogus'"):
        prune_model(model, windows(4, 8), 0.5, profile="bogus")


def test_owl_pruning_is_deterministic():
    ids = windows(8, 16)
    a, b = tiny_llama(), tiny_llama()
    prune_model(a, ids, 0.6, method="sparsegpt", profile="owl", owl_m=3.0, owl_lmbda=0.08)
    prune_model(b, ids, 0.6, method="sparsegpt", profile="owl", owl_m=3.0, owl_lmbda=0.08)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ------------------------------------------------------------------------------------------------
# OWL's true extremes: a span of 2 lmbda with mean the target, not target +- lmbda
# ------------------------------------------------------------------------------------------------


def llama_with_one_outlier_layer(layers=30, outlier=7):
    """A LLaMA of identical decoder layers (so equal outlier ratios under magnitude-OWL) but one, whose
    linears each carry a few very large weights."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=32, vocab_size=50, max_position_embeddings=32,
    )
    model = transformers.LlamaForCausalLM(cfg).eval()
    state = model.model.layers[0].state_dict()
    for layer in model.model.layers[1:]:
        layer.load_state_dict(state)
    with torch.no_grad():
        for lin in model.model.layers[outlier].modules():
            if isinstance(lin, nn.Linear):
                lin.weight[0, :4] = 100.0
    return model


def test_thirty_layers_one_outlier_reach_twice_lmbda_below_the_target():
    """By arithmetic: ratios min-max scaled are 0 (29 layers) and 1 (the outlier); their mean is 1/30,
    so the others sit at S + 2 lmbda / 30 and the outlier at S - 2 lmbda 29 / 30, beyond S - lmbda."""
    ratios = [0.01] * 30
    ratios[7] = 0.05
    got = owl.layer_sparsities(ratios, 0.6, 0.08)
    want = [0.6 + 0.16 / 30] * 30
    want[7] = 0.6 - 0.16 * 29 / 30
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got[7] == pytest.approx(0.445333333333, abs=1e-9) and got[0] == pytest.approx(0.605333333333, abs=1e-9)
    assert np.mean(got) == pytest.approx(0.6, abs=1e-12)
    assert registry.owl_extremes(0.6, 0.08, 30) == pytest.approx((0.6 - 0.16 * 29 / 30, 0.6 + 0.16 * 29 / 30))


def test_thirty_layer_model_gets_the_arithmetic_targets():
    model = llama_with_one_outlier_layer()
    report = prune_model(model, None, 0.6, method="magnitude", profile="owl", owl_m=5, owl_lmbda=0.08)
    want = [0.6 + 0.16 / 30] * 30
    want[7] = 0.6 - 0.16 * 29 / 30
    np.testing.assert_allclose(report["profile"]["layer_sparsities"], want, rtol=0, atol=1e-12)
    for name, sparsity in model_sparsity(model)["layers"].items():
        numel = model.get_submodule(name).weight.numel()
        assert sparsity == pytest.approx(want[layer_of(name)], abs=1 / numel)


def test_lmbda_that_could_leave_zero_one_is_refused_before_any_pruning():
    """lambda 0.3 at 50% with 30 layers: the outlier layer would get 0.5 - 0.6 x 29/30 < 0. Refused
    before any layer is pruned, naming the config key; the old check (lambda < 0.5) let it through."""
    model = llama_with_one_outlier_layer()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"pruning\.owl_lmbda.*30 pruned decoder layers.*use less than 0\.2586"):
        prune_model(model, None, 0.5, method="magnitude", profile="owl", owl_m=5, owl_lmbda=0.3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"pruning\.owl_lmbda"):
        owl.layer_sparsities([0.01] * 29 + [0.05], 0.5, 0.3)
    # two layers reach exactly target +- lambda; thirty reach 0.5 +- 0.29 with lambda 0.15
    assert owl.layer_sparsities([0.01, 0.05], 0.5, 0.3) == pytest.approx([0.8, 0.2])
    assert registry.owl_problem(0.5, 0.15, 30) is None


def test_config_check_refuses_lmbda_by_the_models_layer_count():
    from calmix.config import ConfigError, validate_config

    def config(layers, lmbda, skip=()):
        return {
            "models": {"world": {"kind": "world"}},
            "world": {"model": {"num_layers": layers}},
            "calibration": {"sources": {"web": {"kind": "world", "generator": "web"}}},
            "evaluation": {"dimensions": {"general": {"tasks": ["world_general"]}}},
            "pruning": {"profiles": ["owl"], "sparsities": [0.5], "owl_lmbda": lmbda, "skip": list(skip)},
        }

    validate_config(config(2, 0.3))  # two layers: 0.5 +- 0.3
    with pytest.raises(ConfigError, match=r"'pruning\.owl_lmbda': 0\.3 .* as low as -0\.08 .* 30 pruned decoder layers of model 'world'"):
        validate_config(config(30, 0.3))
    validate_config(config(30, 0.25))  # 0.5 +- 0.4833
    # skipped layers are out of the count: with 28 of 30 layers skipped, two remain
    validate_config(config(30, 0.3, [f"model.layers.{i}.*" for i in range(28)]))


def test_owl_with_a_whole_layer_skipped():
    """Layer 0 skipped whole: no crash, it stays dense and has no ratio; the other three layers' ratios
    are the dense model's, their targets the mapping of those three alone, with mean the target."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=128, vocab_size=100, max_position_embeddings=64,
    )
    dense, ids = transformers.LlamaForCausalLM(cfg).eval(), windows(8, 16)
    model = copy.deepcopy(dense)
    report = prune_model(model, ids, 0.6, method="wanda", profile="owl", owl_m=3.0, owl_lmbda=0.1,
                         skip=["model.layers.0.*"])
    ratios, targets = report["profile"]["outlier_ratios"], report["profile"]["layer_sparsities"]
    assert ratios[0] is None and targets[0] is None
    np.testing.assert_allclose(ratios[1:], oracle_ratios(dense, ids, 3.0)[1:], atol=2e-3)
    n = (np.array(ratios[1:]) - min(ratios[1:])) / (max(ratios[1:]) - min(ratios[1:]))
    np.testing.assert_allclose(targets[1:], 0.6 - 0.2 * (n - n.mean()), rtol=0, atol=1e-12)
    assert np.mean(targets[1:]) == pytest.approx(0.6, abs=1e-12)
    for name, mod in dense.model.layers[0].named_modules():
        if isinstance(mod, nn.Linear):
            assert torch.equal(model.model.layers[0].get_submodule(name).weight, mod.weight)
    found = model_sparsity(model)["layers"]
    for entry in report["layers"]:
        if layer_of(entry["name"]) == 0:
            assert entry["skipped"] and entry["target_sparsity"] is None and found[entry["name"]] == 0
        else:
            assert entry["target_sparsity"] == targets[layer_of(entry["name"])]
            assert found[entry["name"]] == pytest.approx(entry["target_sparsity"], abs=1 / 64 + 1e-9)
