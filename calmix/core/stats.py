"""Statistics for the report: Spearman rho with an exact or approximate p-value, Benjamini-Hochberg
q-values across a grid of tests, and the pieces of the seeded bootstrap that calmix.analysis.intervals and
calmix.analysis.correlation build their intervals from (keyed draws, resample counts, percentile intervals,
rho of many resamples at once).

With 15 calibration sources a rank correlation's p-value from the t approximation is fair; with 5 it
is not, so below ``EXACT_MAX_N`` pairs the p-value is exact: the share of all n! re-pairings whose
|rho| is at least the observed one (``scipy.stats.permutation_test`` enumerates them).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

#: Largest n for which the permutation p-value is exact (9! = 362880 re-pairings).
EXACT_MAX_N = 9


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, int, str]:
    """(rho, two-sided p, n, p_method) over the pairs where both values are finite.

    p_method is "exact" (all n! permutations) for n <= EXACT_MAX_N, else "t" (scipy's t
    approximation); rho and p are NaN for n < 3 or a constant input (p_method "none").
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, n = x[ok], y[ok], int(ok.sum())
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, n, "none"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        res = stats.spearmanr(x, y)
    rho = float(res.statistic)
    if n > EXACT_MAX_N:
        return rho, float(res.pvalue), n, "t"
    ry = stats.rankdata(y)

    def abs_rho(rx):  # rho of ranks = Pearson r of the (average) ranks
        return abs(np.corrcoef(rx, ry)[0, 1])

    perm = stats.permutation_test(
        (stats.rankdata(x),), abs_rho, permutation_type="pairings", n_resamples=np.inf, alternative="greater"
    )
    return rho, float(perm.pvalue), n, "exact"


def benjamini_hochberg(pvalues: Sequence[float]) -> np.ndarray:
    """BH-adjusted q-values (false discovery rate), NaN where p is NaN; the NaNs are not counted."""
    p = np.asarray(pvalues, float)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = stats.false_discovery_control(p[ok], method="bh")
    return q


def keyed_rng(seed: int, *key: object) -> np.random.Generator:
    """A generator seeded by ``seed`` and a key (task, calibration set ...), so that the draws for one
    key do not change when other keys are added to or removed from a study."""
    digest = hashlib.sha256("\x1f".join(map(str, key)).encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def resample_counts(n_items: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n_items) counts: how often each item is drawn in each bootstrap resample.

    Weighting one score matrix by these counts resamples every column with the same draw, which is
    what pairs a dense model's items with every pruned model's.
    """
    return rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_resamples)


def percentile_interval(draws: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the last axis, ignoring NaN draws; NaN where no draw is finite."""
    draws = np.asarray(draws, float)
    alpha = (1 - confidence) / 2
    low = np.full(draws.shape[:-1], np.nan)
    high = np.full(draws.shape[:-1], np.nan)
    ok = np.isfinite(draws).any(axis=-1)
    if ok.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            low[ok] = np.nanquantile(draws[ok], alpha, axis=-1)
            high[ok] = np.nanquantile(draws[ok], 1 - alpha, axis=-1)
    return low, high


def rowwise_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho of each row of x with the same row of y (average ranks for ties); NaN for a row
    with a NaN or a constant side. Vectorised for bootstrap resamples of rho."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    bad = ~(np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1))
    rx = stats.rankdata(np.nan_to_num(x), axis=1)
    ry = stats.rankdata(np.nan_to_num(y), axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (rx * ry).sum(axis=1) / den
    rho[bad | (den == 0)] = np.nan
    return rho
