"""calmix.core.stats against scipy on fixed data, the exact p-value against brute-force enumeration."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from calmix.core.stats import (EXACT_MAX_N, benjamini_hochberg, keyed_rng, percentile_interval,
                          resample_counts, spearman)

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


def test_keyed_rng_is_reproducible_and_independent_of_other_keys():
    a = keyed_rng(0, "world", "general", "world_general").integers(0, 1 << 30, 8)
    assert (a == keyed_rng(0, "world", "general", "world_general").integers(0, 1 << 30, 8)).all()
    assert (a != keyed_rng(1, "world", "general", "world_general").integers(0, 1 << 30, 8)).any()
    assert (a != keyed_rng(0, "world", "general", "world_code").integers(0, 1 << 30, 8)).any()


def test_resample_counts_are_draws_with_replacement():
    counts = resample_counts(50, 4000, np.random.default_rng(0))
    assert counts.shape == (4000, 50) and (counts.sum(axis=1) == 50).all()
    # each item is drawn Binomial(50, 1/50) times: mean 1, variance 0.98
    assert counts.mean() == pytest.approx(1.0) and counts.var() == pytest.approx(0.98, abs=0.03)


def test_percentile_interval_ignores_nan_draws():
    draws = np.arange(101, dtype=float)
    low, high = percentile_interval(draws, 0.9)
    assert (float(low), float(high)) == pytest.approx((5.0, 95.0))
    low, high = percentile_interval(np.r_[draws, [np.nan] * 7], 0.9)
    assert (float(low), float(high)) == pytest.approx((5.0, 95.0))
    low, high = percentile_interval(np.full((2, 3), np.nan))
    assert np.isnan(low).all() and np.isnan(high).all() and low.shape == (2,)
