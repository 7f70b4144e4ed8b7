"""Tests for the bootstrap-over-seeds interval of Spearman rho in calmix.analysis.correlation.correlation_table
(rho_low, rho_high) and for calmix.core.stats.rowwise_spearman, which it uses.

The interval's exact distribution is built by enumeration: every source's seeds are drawn with
replacement (k^k equally likely ordered draws for k seeds, a seed's metric and retention kept
together), every combination over sources gives one rho (scipy.stats.spearmanr), and the bootstrap
bounds are checked against that distribution's 2.5% and 97.5% quantiles.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from calmix.analysis.correlation import CORRELATION_COLUMNS, correlation_table
from calmix.analysis.intervals import Bootstrap
from calmix.core.stats import rowwise_spearman

MODEL = "world"
GROUP = {"model": MODEL, "method": "sparsegpt", "target": "0.6"}
DIMS = ["general", "math", "total"]
METRICS = ["perplexity", "ngram4_aggregation"]

# Per source, per seed: metrics (integers) and dimension retentions (multiples of 1/64, so every
# mean over seeds is exact in floating point and ties between sources are real ties). Chosen so
# that no resample makes a column constant across the four sources (e.g. perplexity: A's possible
# means are {1, 3, 5} and B's {2, 4, 6}), while ties within a resample do occur.
SOURCES = {
    "A": [{"perplexity": 1, "ngram4_aggregation": 8, "general": 40 / 64, "math": 50 / 64},
          {"perplexity": 5, "ngram4_aggregation": 2, "general": 48 / 64, "math": 34 / 64}],
    "B": [{"perplexity": 2, "ngram4_aggregation": 3, "general": 44 / 64, "math": 38 / 64},
          {"perplexity": 6, "ngram4_aggregation": 5, "general": 36 / 64, "math": 46 / 64}],
    "C": [{"perplexity": 3, "ngram4_aggregation": 6, "general": 52 / 64, "math": 30 / 64},
          {"perplexity": 7, "ngram4_aggregation": 1, "general": 42 / 64, "math": 40 / 64}],
    "D": [{"perplexity": 4, "ngram4_aggregation": 4, "general": 46 / 64, "math": 44 / 64},
          {"perplexity": 8, "ngram4_aggregation": 7, "general": 56 / 64, "math": 32 / 64}],
}


def with_total(seed_values: dict) -> dict:
    return {**seed_values, "total": (seed_values["general"] + seed_values["math"]) / 2}


def adjusted(x: float) -> float:
    """The chance-adjusted column of the fixture: a decreasing map, so its ranks reverse."""
    return 1.0 - x


def tables(sources: dict = SOURCES) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metric table, per-checkpoint retention table) of the fixture."""
    metric_rows, ret_rows = [], []
    for calib, seeds in sources.items():
        for seed, values in enumerate(seeds):
            values = with_total(values)
            metric_rows.append({"model": MODEL, "calib": calib, "seed": seed,
                                **{m: float(values[m]) for m in METRICS}})
            for dim in DIMS:
                level = "total" if dim == "total" else "dimension"
                ret_rows.append({**GROUP, "calib": calib, "seed": seed, "level": level, "name": dim,
                                 "dimension": dim, "retention": values[dim],
                                 "chance_adjusted": adjusted(values[dim])})
            # a task row, which the correlations must ignore
            ret_rows.append({**GROUP, "calib": calib, "seed": seed, "level": "task", "name": "gen_mc",
                             "dimension": "general", "retention": 9.0, "chance_adjusted": -9.0})
    return pd.DataFrame(metric_rows), pd.DataFrame(ret_rows)


def seed_outcomes(seeds: list[dict]) -> list[dict]:
    """Every ordered draw of k seeds out of k with replacement (probability 1/k^k each): the mean
    of each column over the drawn seeds."""
    k = len(seeds)
    rows = [with_total(s) for s in seeds]
    out = []
    for pick in itertools.product(range(k), repeat=k):
        out.append({col: sum(rows[i][col] for i in pick) / k for col in rows[0]})
    return out


def exact_distribution(sources: dict, metric: str, dim: str, value: str) -> list[tuple[float, float]]:
    """(rho, probability) over every combination of the sources' seed draws, by scipy."""
    per_source = [seed_outcomes(seeds) for seeds in sources.values()]
    prob = 1.0 / math.prod(len(o) for o in per_source)
    out = []
    transform = adjusted if value == "chance_adjusted" else (lambda v: v)
    for combo in itertools.product(*per_source):
        x = [c[metric] for c in combo]
        y = [transform(c[dim]) for c in combo]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho = stats.spearmanr(x, y).statistic
        out.append((float(rho), prob))
    return out


def check_against_exact(dist: list[tuple[float, float]], low: float, high: float,
                        q: float = 0.025, slack: float = 0.01) -> None:
    """low and high are the q and 1 - q quantiles of the discrete distribution, up to Monte Carlo
    slack (the sd of an empirical CDF at 20000 resamples is <= 0.0035 / 3 ~ 0.0011 near 2.5%, so
    0.01 is ~9 sd)."""
    rho = np.array([r for r, _ in dist])
    p = np.array([w for _, w in dist])
    assert np.isfinite(rho).all(), "fixture makes a resample constant"
    assert p.sum() == pytest.approx(1.0)
    eps = 1e-9
    assert p[rho < low - eps].sum() <= q + slack
    assert p[rho <= low + eps].sum() >= q - slack
    assert p[rho > high + eps].sum() <= q + slack
    assert p[rho >= high - eps].sum() >= q - slack


def hand_rho(sources: dict, metric: str, dim: str, value: str = "retention") -> float:
    transform = adjusted if value == "chance_adjusted" else (lambda v: v)
    x = [np.mean([s[metric] for s in seeds]) for seeds in sources.values()]
    y = [np.mean([transform(with_total(s)[dim]) for s in seeds]) for seeds in sources.values()]
    return float(stats.spearmanr(x, y).statistic)


def cell(corr: pd.DataFrame, metric: str, dim: str) -> pd.Series:
    row = corr[(corr["metric"] == metric) & (corr["dimension"] == dim)]
    assert len(row) == 1
    return row.iloc[0]


# --------------------------------------------------------------------------------------------------
# rho_low / rho_high
# --------------------------------------------------------------------------------------------------

def test_one_seed_per_source_gives_no_interval():
    one_seed = {c: seeds[:1] for c, seeds in SOURCES.items()}
    metrics, retention = tables(one_seed)
    corr = correlation_table(metrics, retention, calibs=list(one_seed), boot=Bootstrap(resamples=200))
    assert list(corr.columns) == CORRELATION_COLUMNS
    assert len(corr) == len(METRICS) * len(DIMS)
    for _, row in corr.iterrows():
        assert math.isfinite(row["rho"])
        assert row["rho"] == pytest.approx(hand_rho(one_seed, row["metric"], row["dimension"]), abs=1e-12)
        assert math.isnan(row["rho_low"]) and math.isnan(row["rho_high"])


@pytest.mark.parametrize("value", ["retention", "chance_adjusted"])
def test_interval_matches_the_exactly_enumerated_distribution(value):
    metrics, retention = tables()
    corr = correlation_table(metrics, retention, calibs=list(SOURCES), value=value,
                             boot=Bootstrap(resamples=20000, confidence=0.95, seed=0))
    assert len(corr) == len(METRICS) * len(DIMS)
    for metric in METRICS:
        for dim in DIMS:
            row = cell(corr, metric, dim)
            assert row["n"] == 4
            assert row["rho"] == pytest.approx(hand_rho(SOURCES, metric, dim, value), abs=1e-12)
            dist = exact_distribution(SOURCES, metric, dim, value)
            assert len(dist) == 4 ** 4
            check_against_exact(dist, row["rho_low"], row["rho_high"])


def test_interval_with_unequal_seed_counts_matches_enumeration():
    """A has three seeds (27 draws), B one (always itself), C and D two: 27 * 1 * 4 * 4 outcomes."""
    sources = {
        "A": [*SOURCES["A"], {"perplexity": 3, "ngram4_aggregation": 4, "general": 60 / 64, "math": 36 / 64}],
        "B": SOURCES["B"][:1],
        "C": SOURCES["C"],
        "D": SOURCES["D"],
    }
    metrics, retention = tables(sources)
    corr = correlation_table(metrics, retention, boot=Bootstrap(resamples=20000, seed=3))
    for metric in METRICS:
        for dim in DIMS:
            row = cell(corr, metric, dim)
            assert row["rho"] == pytest.approx(hand_rho(sources, metric, dim), abs=1e-12)
            dist = exact_distribution(sources, metric, dim, "retention")
            assert len(dist) == 27 * 4 * 4
            check_against_exact(dist, row["rho_low"], row["rho_high"])


def test_interval_at_lower_confidence_matches_enumeration_and_is_narrower():
    metrics, retention = tables()
    wide = correlation_table(metrics, retention, boot=Bootstrap(resamples=20000, confidence=0.95, seed=1))
    narrow = correlation_table(metrics, retention, boot=Bootstrap(resamples=20000, confidence=0.5, seed=1))
    for metric in METRICS:
        for dim in DIMS:
            w, n = cell(wide, metric, dim), cell(narrow, metric, dim)
            check_against_exact(exact_distribution(SOURCES, metric, dim, "retention"),
                                n["rho_low"], n["rho_high"], q=0.25)
            assert w["rho_low"] <= n["rho_low"] <= n["rho_high"] <= w["rho_high"]


def test_point_inside_interval_and_reproducible_by_seed():
    metrics, retention = tables()
    a = correlation_table(metrics, retention, boot=Bootstrap(resamples=2000, seed=5))
    b = correlation_table(*tables(), boot=Bootstrap(resamples=2000, seed=5))
    c = correlation_table(metrics, retention, boot=Bootstrap(resamples=2000, seed=6))
    pd.testing.assert_frame_equal(a, b)
    assert a.to_csv() == b.to_csv()
    # (1e-12: where rho is the largest value a resample can reach, scipy's point rho and the
    # vectorised resample rho may differ in the last bit)
    assert (a["rho_low"] <= a["rho"] + 1e-12).all() and (a["rho"] <= a["rho_high"] + 1e-12).all()
    assert (a["rho_high"] - a["rho_low"] > 0.1).all()
    # the bootstrap seed moves the interval, not the estimate or its p-value
    pd.testing.assert_frame_equal(a.drop(columns=["rho_low", "rho_high"]),
                                  c.drop(columns=["rho_low", "rho_high"]))
    assert not a[["rho_low", "rho_high"]].equals(c[["rho_low", "rho_high"]])


def test_sources_left_out_by_calibs_do_not_move_the_interval():
    """A fifth source present in both tables but not in ``calibs`` leaves every number unchanged
    (its own keyed draws are never used, the others' are keyed by their own calib)."""
    extra = {**SOURCES, "0mix": [
        {"perplexity": 9, "ngram4_aggregation": 9, "general": 1.0, "math": 1.0},
        {"perplexity": 0, "ngram4_aggregation": 0, "general": 0.5, "math": 0.5}]}
    boot = Bootstrap(resamples=3000, seed=2)
    base = correlation_table(*tables(), calibs=list(SOURCES), boot=boot)
    restricted = correlation_table(*tables(extra), calibs=list(SOURCES), boot=boot)
    pd.testing.assert_frame_equal(base, restricted)
    # draws are keyed by calib, not by position: listing the sources in another order changes
    # nothing (rho is symmetric in the sources)
    reordered = correlation_table(*tables(extra), calibs=list(SOURCES)[::-1], boot=boot)
    pd.testing.assert_frame_equal(base, reordered)
    everything = correlation_table(*tables(extra), boot=boot)
    assert (everything["n"] == 5).all()
    assert not everything["rho"].equals(base["rho"])


# --------------------------------------------------------------------------------------------------
# rowwise_spearman
# --------------------------------------------------------------------------------------------------

def test_rowwise_spearman_equals_scipy_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(300, 7)).astype(float)  # many ties
    y = rng.integers(0, 5, size=(300, 7)).astype(float)
    y[:50] = rng.normal(size=(50, 7))  # some rows without ties on one side
    got = rowwise_spearman(x, y)
    assert got.shape == (300,)
    checked = 0
    for i in range(300):
        if np.ptp(x[i]) == 0 or np.ptp(y[i]) == 0:
            assert math.isnan(got[i])
            continue
        assert got[i] == pytest.approx(stats.spearmanr(x[i], y[i]).statistic, abs=1e-12)
        checked += 1
    assert checked > 250


def test_rowwise_spearman_nan_for_constant_or_missing_rows():
    x = np.array([[1.0, 2.0, 3.0, 4.0],
                  [2.0, 2.0, 2.0, 2.0],    # constant x
                  [1.0, 2.0, 3.0, 4.0],    # constant y
                  [1.0, np.nan, 3.0, 4.0],  # NaN in x
                  [1.0, 2.0, 3.0, 4.0],    # NaN in y
                  [4.0, 3.0, 2.0, 1.0]])
    y = np.array([[1.0, 3.0, 2.0, 4.0],
                  [1.0, 2.0, 3.0, 4.0],
                  [5.0, 5.0, 5.0, 5.0],
                  [1.0, 2.0, 3.0, 4.0],
                  [1.0, 2.0, np.inf, 4.0],
                  [1.0, 2.0, 3.0, 4.0]])
    got = rowwise_spearman(x, y)
    assert got[0] == pytest.approx(stats.spearmanr(x[0], y[0]).statistic)  # 0.8
    assert got[0] == pytest.approx(0.8)
    assert np.isnan(got[1:5]).all()
    assert got[5] == pytest.approx(-1.0)
