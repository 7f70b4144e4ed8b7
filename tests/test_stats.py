"""calmix.stats against scipy on fixed data, the exact p-value against brute-force enumeration."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from calmix.stats import EXACT_MAX_N, benjamini_hochberg, bootstrap_interval, spearman

X15 = [3.1, 0.2, 5.5, 1.0, 4.4, 2.2, 9.0, 7.5, 6.1, 8.8, 0.9, 3.3, 2.0, 7.0, 5.0]
Y15 = [2.0, 0.5, 4.0, 1.5, 5.0, 2.5, 7.0, 8.0, 5.5, 9.0, 0.1, 3.0, 3.0, 6.0, 4.5]  # one tie


def test_rho_and_t_p_equal_scipy_for_larger_n():
    rho, p, n, how = spearman(X15, Y15)
    want = sps.spearmanr(X15, Y15)
    assert (n, how) == (15, "t") and rho == pytest.approx(want.statistic, abs=1e-12) and p == pytest.approx(want.pvalue, rel=1e-12)


@pytest.mark.parametrize("n", [4, 6, 7])
def test_exact_p_equals_brute_force_enumeration(n):
    x, y = np.array(X15[:n]), np.array(Y15[:n])
    rho, p, m, how = spearman(x, y)
    assert (m, how) == (n, "exact") and rho == pytest.approx(sps.spearmanr(x, y).statistic)
    rx, ry = sps.rankdata(x), sps.rankdata(y)
    observed = abs(np.corrcoef(rx, ry)[0, 1])
    perms = list(itertools.permutations(rx))
    hits = sum(abs(np.corrcoef(perm, ry)[0, 1]) >= observed - 1e-12 for perm in perms)
    assert p == pytest.approx(hits / len(perms), abs=1e-12)
    assert n <= EXACT_MAX_N


def test_nan_pairs_dropped_and_undefined_cases():
    rho, p, n, how = spearman([1, 2, np.nan, 4, 5], [2, 1, 3, np.nan, 5])
    assert n == 3 and how == "exact"
    assert spearman([1, 2], [2, 1])[3] == "none" and math.isnan(spearman([1, 1, 1, 1], [1, 2, 3, 4])[0])


def test_benjamini_hochberg_equals_scipy_and_skips_nan():
    p = [0.01, 0.04, 0.03, 0.2, np.nan, 0.001]
    q = benjamini_hochberg(p)
    want = sps.false_discovery_control([0.01, 0.04, 0.03, 0.2, 0.001], method="bh")
    assert np.isnan(q[4]) and np.allclose(np.delete(q, 4), want)
    assert all(qi >= pi for qi, pi in zip(np.delete(q, 4), np.delete(p, 4)))


def test_bootstrap_interval_is_reproducible_by_seed_and_covers_the_estimate():
    rng = np.random.default_rng(0)
    dense, pruned = rng.random(200) < 0.9, rng.random(200) < 0.8

    def retention(d, q):
        return q.mean() / d.mean()

    a = bootstrap_interval(retention, dense, pruned, seed=1)
    assert a == bootstrap_interval(retention, dense, pruned, seed=1)
    assert a != bootstrap_interval(retention, dense, pruned, seed=2)
    assert a[0] < retention(dense, pruned) < a[1]
    assert all(math.isnan(v) for v in bootstrap_interval(np.mean, [1.0]))


def test_paired_retention_interval_pairs_items_and_is_reproducible():
    from calmix.stats import paired_retention_interval

    rng = np.random.default_rng(0)
    dense = {"a": (rng.random(300) < 0.9).astype(float), "b": (rng.random(200) < 0.7).astype(float)}
    # pruned loses exactly the items it loses: perfectly paired, its retention is known per resample
    pruned = {"a": dense["a"] * (rng.random(300) < 0.8), "b": dense["b"].copy()}
    out = paired_retention_interval(dense, pruned, seed=3)
    assert out == paired_retention_interval(dense, pruned, seed=3)
    point = {t: pruned[t].mean() / dense[t].mean() for t in dense}
    assert out["b"] == (1.0, 1.0)  # identical items: no uncertainty at all when paired
    assert out["a"][0] < point["a"] < out["a"][1] < 1.0
    assert out["mean"][0] < (point["a"] + point["b"]) / 2 < out["mean"][1]
    with pytest.raises(ValueError, match="same non-empty items"):
        paired_retention_interval({"a": [1.0, 0.0]}, {"a": [1.0]})
