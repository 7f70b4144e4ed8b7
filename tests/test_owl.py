"""OWL (calmix.pruning.owl) against an independent computation from plain forward passes, and the
per-layer sparsity it hands the driver, for every method."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from calmix.pruning import owl
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
