"""Statistics for the report: Spearman rho with an exact or approximate p-value, Benjamini-Hochberg
q-values across a grid of tests, and seeded bootstrap intervals. All of it is scipy underneath.

With 15 calibration sources a rank correlation's p-value from the t approximation is fair; with 5 it
is not, so below ``EXACT_MAX_N`` pairs the p-value is exact: the share of all n! re-pairings whose
|rho| is at least the observed one (``scipy.stats.permutation_test`` enumerates them).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

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


def bootstrap_interval(
    statistic: Callable[..., float], *samples: Sequence[float], confidence: float = 0.95,
    n_resamples: int = 2000, seed: int = 0, paired: bool = True,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*samples)``, reproducible by ``seed``.

    ``paired`` resamples the same indices in every sample (per-item scores of a dense and a pruned
    model, metric and retention per seed). NaN bounds when a sample has fewer than two values.
    """
    data = tuple(np.asarray(s, float) for s in samples)
    if any(len(d) < 2 for d in data):
        return math.nan, math.nan
    res = stats.bootstrap(
        data, statistic, paired=paired, vectorized=False, n_resamples=n_resamples, confidence_level=confidence,
        method="percentile", rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_retention_interval(
    dense: dict[str, Sequence[float]], pruned: dict[str, Sequence[float]], *, confidence: float = 0.95,
    n_resamples: int = 2000, seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of retention from per-item scores, paired by item.

    ``dense[task]`` and ``pruned[task]`` are the same items' scores in the same order. Each resample
    draws the items of every task (the same draw for the dense and the pruned model), so the
    interval reflects which items a task happens to have, not two independent samples. Returns an
    interval per task (pruned mean / dense mean) and under "mean" one for the mean over tasks (a
    dimension's retention). Reproducible by ``seed``; NaN where a dense mean is 0 in every resample.
    """
    if set(dense) != set(pruned):
        raise ValueError(f"tasks differ: dense {sorted(dense)} vs pruned {sorted(pruned)}")
    rng = np.random.default_rng(seed)
    alpha = (1 - confidence) / 2
    draws = {}
    for task in sorted(dense):
        d, p = np.asarray(dense[task], float), np.asarray(pruned[task], float)
        if d.shape != p.shape or d.ndim != 1 or len(d) == 0:
            raise ValueError(f"task {task!r}: dense and pruned need the same non-empty items, got {d.shape} and {p.shape}")
        index = rng.integers(0, len(d), size=(n_resamples, len(d)))
        with np.errstate(divide="ignore", invalid="ignore"):
            draws[task] = p[index].mean(1) / d[index].mean(1)
    draws["mean"] = np.mean(np.stack(list(draws.values())), axis=0)

    def interval(values: np.ndarray) -> tuple[float, float]:
        values = values[np.isfinite(values)]
        if not len(values):
            return math.nan, math.nan
        return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))

    return {task: interval(values) for task, values in draws.items()}
