"""Tests for calmix.analysis.intervals.retention_with_intervals: bootstrap intervals of retention from
per-item scores (per checkpoint, paired with the dense model's items) and over seeds (two-stage), and
the tables across calibration sets (calmix.analysis.comparisons) built from them.

Every expected number is derived without the module: by hand, by exact enumeration of a discrete
bootstrap distribution, or by a normal (delta-method) approximation whose tolerance is justified
next to it.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from calmix.analysis.comparisons import builder_comparisons, separated_pairs, source_pairs
from calmix.analysis.intervals import SUMMARY_COLUMNS, Bootstrap, retention_with_intervals
from calmix.analysis.retention import RETENTION_COLUMNS, items_path, load_eval_records, retention_table
from calmix.evaluation.items import write_items

MODEL = "world"
METHOD = "sparsegpt"
TARGET = "0.6"
#: The columns the interval adds to the per-checkpoint table: <value>_low and <value>_high.
INTERVAL_COLUMNS = ["retention_low", "retention_high", "chance_adjusted_low", "chance_adjusted_high"]
Z975 = 1.959963984540054  # standard normal 97.5% quantile


# --------------------------------------------------------------------------------------------------
# Synthetic records
# --------------------------------------------------------------------------------------------------

def item_frame(task: str, scores, weights=None, doc_ids=None, leaf: str | None = None) -> pd.DataFrame:
    """Per-item scores as read_items returns them (weight 1 for a mean-aggregated task)."""
    scores = np.asarray(scores, float)
    return pd.DataFrame({
        "task": task, "leaf": leaf or task,
        "doc_id": np.arange(len(scores)) if doc_ids is None else np.asarray(doc_ids),
        "score": scores,
        "weight": np.ones(len(scores)) if weights is None else np.asarray(weights, float),
    })


def record(dimension: str, tasks: dict[str, dict], *, method: str = METHOD, calib: str | None = "web",
           seed: int | None = 0, model: str = MODEL, target: str = TARGET) -> dict:
    """An eval record, as the evaluation stage writes it (the target label under "sparsity").
    ``tasks[name]`` holds "items" (scores), optional "weights", "chance", "higher_is_better",
    "aggregation" and "score" (default: the statistic of the items)."""
    if method == "dense":
        calib, seed, target = None, None, "dense"
    entries, frames = {}, []
    for name, spec in tasks.items():
        scores = np.asarray(spec["items"], float)
        weights = spec.get("weights")
        aggregation = spec.get("aggregation", "mean")
        if aggregation == "perplexity":
            stat = math.exp(-scores.sum() / np.sum(weights))
        else:
            stat = float(scores.mean())
        entries[name] = {"metric": spec.get("metric", "acc,none"), "num_fewshot": 0, "score": spec.get("score", stat),
                         "stderr": 0.01, "chance": spec.get("chance"), "n": len(scores),
                         "higher_is_better": spec.get("higher_is_better", True), "aggregation": aggregation}
        frames.append(item_frame(name, scores, weights, spec.get("doc_ids")))
    where = f"/evals/{model}/{method}/{target.replace(':', 'of')}/{calib}/seed{seed}/{dimension}.json"
    return {"model": model, "method": method, "sparsity": target, "calib": calib, "seed": seed,
            "dimension": dimension, "settings": {}, "tasks": entries, "path": where,
            "items": pd.concat(frames, ignore_index=True)}


def rows(table: pd.DataFrame, **where) -> pd.DataFrame:
    mask = np.ones(len(table), bool)
    for col, val in where.items():
        mask &= (table[col] == val).to_numpy()
    return table[mask]


def one(table: pd.DataFrame, **where) -> pd.Series:
    found = rows(table, **where)
    assert len(found) == 1, (where, found)
    return found.iloc[0]


def binary(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    return (rng.random(n) < p).astype(float)


def two_dimension_records(seeds=(0,), calibs=("web",), model=MODEL, base_seed=0) -> list[dict]:
    """A dense model with dimensions general (gen_mc with chance 0.25, gen_qa) and math (math_gsm),
    random 0/1 items, and pruned checkpoints with their own random 0/1 items on the same docs."""
    rng = np.random.default_rng(base_seed)
    sizes = {"gen_mc": 200, "gen_qa": 150, "math_gsm": 120}
    dense_p = {"gen_mc": 0.8, "gen_qa": 0.5, "math_gsm": 0.4}
    chance = {"gen_mc": 0.25, "gen_qa": 0.0, "math_gsm": 0.0}
    dims = {"general": ["gen_mc", "gen_qa"], "math": ["math_gsm"]}
    recs = []
    for dim, tasks in dims.items():
        recs.append(record(dim, {t: {"items": binary(rng, sizes[t], dense_p[t]), "chance": chance[t]}
                                 for t in tasks}, method="dense", model=model))
    for calib in calibs:
        for seed in seeds:
            for dim, tasks in dims.items():
                recs.append(record(dim, {t: {"items": binary(rng, sizes[t], 0.8 * dense_p[t]),
                                             "chance": chance[t]} for t in tasks},
                                   calib=calib, seed=seed, model=model))
    return recs


# --------------------------------------------------------------------------------------------------
# 1. Pairing
# --------------------------------------------------------------------------------------------------

def paired_records() -> list[dict]:
    """Dense items random 0/1; checkpoint "same" has exactly the dense items, "other" its own."""
    rng = np.random.default_rng(11)
    dense_items = {
        "general": {"gen_mc": {"items": binary(rng, 200, 0.6), "chance": 0.25},
                    "gen_qa": {"items": binary(rng, 150, 0.5), "chance": 0.0}},
        "math": {"math_gsm": {"items": binary(rng, 120, 0.5), "chance": 0.0}},
    }
    recs = [record(dim, tasks, method="dense") for dim, tasks in dense_items.items()]
    recs += [record(dim, tasks, calib="same") for dim, tasks in dense_items.items()]
    for dim, tasks in dense_items.items():
        own = {t: {**spec, "items": binary(rng, len(spec["items"]), 0.5)} for t, spec in tasks.items()}
        recs.append(record(dim, own, calib="other"))
    return recs


def test_identical_items_give_a_degenerate_interval_at_one():
    table, summary, *_ = retention_with_intervals(paired_records(), Bootstrap(resamples=1000, seed=3))
    same = rows(table, calib="same")
    assert len(same) == 3 + 2 + 1  # three tasks, two dimensions, the total
    for col in ["retention", "chance_adjusted", *INTERVAL_COLUMNS]:
        # A shared item draw makes every resample's ratio 1 (up to the rounding of the two sums).
        assert same[col].to_numpy() == pytest.approx(1.0, abs=1e-12), col
    same_summary = rows(summary, calib="same")
    for col in ["retention_low", "retention_high", "chance_adjusted_low", "chance_adjusted_high"]:
        assert same_summary[col].to_numpy() == pytest.approx(1.0, abs=1e-12), col
    # Independent draws for dense and pruned would be wide: the "other" checkpoint, with items of
    # the same size and mean ~0.5 drawn apart from the dense ones, has task intervals ~0.3 wide
    # (delta method: 3.92 * sqrt(2 * 0.25 / 150) / 0.5 = 0.45 for gen_qa).
    other = rows(table, calib="other", level="task")
    assert ((other["retention_high"] - other["retention_low"]) > 0.1).all()


# --------------------------------------------------------------------------------------------------
# 2. Normal approximations
# --------------------------------------------------------------------------------------------------

def test_interval_matches_the_normal_approximation_for_a_constant_dense_model():
    """Dense items all 1, pruned 200 ones and 200 zeros: a resample's retention is the mean of 400
    Bernoulli(0.5) draws, sd sqrt(0.25 / 400) = 0.025, so the 95% interval is 0.5 +- 0.049.
    Tolerance 0.01: the Monte Carlo sd of a 2.5% quantile with 4000 resamples is
    sqrt(0.025 * 0.975 / 4000) / phi(1.96) * 0.025 = 0.0011, the lattice step is 1 / 400 and the
    binomial's departure from the normal at n = 400 is smaller still."""
    pruned = np.array([1.0, 0.0] * 200)
    np.random.default_rng(5).shuffle(pruned)
    recs = [record("general", {"mc": {"items": np.ones(400), "chance": 0.25}}, method="dense"),
            record("general", {"mc": {"items": pruned, "chance": 0.25}})]
    table, _, *_ = retention_with_intervals(recs, Bootstrap(resamples=4000, confidence=0.95, seed=1))
    half = Z975 * math.sqrt(0.25 / 400)
    for level in ("task", "dimension", "total"):
        row = one(table, level=level)
        assert row["retention"] == pytest.approx(0.5, abs=1e-12)
        assert row["retention_low"] == pytest.approx(0.5 - half, abs=0.01)
        assert row["retention_high"] == pytest.approx(0.5 + half, abs=0.01)
        # chance-adjusted: (p - 0.25) / (1 - 0.25), a linear map of the same draws
        assert row["chance_adjusted"] == pytest.approx(1 / 3, abs=1e-12)
        assert row["chance_adjusted_low"] == pytest.approx((0.5 - half - 0.25) / 0.75, abs=0.01 / 0.75)
        assert row["chance_adjusted_high"] == pytest.approx((0.5 + half - 0.25) / 0.75, abs=0.01 / 0.75)


def test_paired_ratio_interval_matches_the_delta_method():
    """Dense and pruned both 0/1 on 400 items: 240 right by both, 80 only by dense, 20 only by
    pruned, 60 by neither. R = 0.65 / 0.8 = 0.8125. The paired (same items) bootstrap variance of
    mean(p) / mean(d) is, by the delta method, mean((p_i - R d_i)^2) / (n mean(d)^2) =
    0.203125 / 400 / 0.64, sd 0.02817, half-width 0.0552. An unpaired bootstrap would give
    sqrt(0.65 * 0.35 / 400 + R^2 * 0.16 / 400) / 0.8 = 0.0360, half-width 0.0706, so the 0.01
    tolerance (Monte Carlo sd ~0.0012 at 4000 resamples; the ratio's curvature bias ~R cv(d)^2 =
    0.0005) tells the two apart."""
    d = np.array([1.0] * 240 + [1.0] * 80 + [0.0] * 20 + [0.0] * 60)
    p = np.array([1.0] * 240 + [0.0] * 80 + [1.0] * 20 + [0.0] * 60)
    order = np.random.default_rng(9).permutation(400)
    recs = [record("general", {"qa": {"items": d[order]}}, method="dense"),
            record("general", {"qa": {"items": p[order]}})]
    table, _, *_ = retention_with_intervals(recs, Bootstrap(resamples=4000, seed=2))
    r = 0.65 / 0.8
    z = p - r * d
    assert z.mean() == pytest.approx(0.0, abs=1e-12)
    half = Z975 * math.sqrt((z ** 2).mean() / 400) / 0.8
    assert half == pytest.approx(0.0552, abs=1e-4)
    row = one(table, level="task")
    assert row["retention"] == pytest.approx(r, abs=1e-12)
    assert row["retention_low"] == pytest.approx(r - half, abs=0.01)
    assert row["retention_high"] == pytest.approx(r + half, abs=0.01)


# --------------------------------------------------------------------------------------------------
# 3. Two-stage bootstrap over seeds, exactly
# --------------------------------------------------------------------------------------------------

SEED_VALUES = {0: 0.6, 1: 0.7, 2: 0.8}


def seed_records(values: dict[int, float] = SEED_VALUES, n: int = 50, calib: str = "web") -> list[dict]:
    """Dense items all 1.0; each seed's pruned items constant (no item noise)."""
    recs = [record("general", {"qa": {"items": np.ones(n)}}, method="dense")]
    for seed, v in values.items():
        recs.append(record("general", {"qa": {"items": np.full(n, v)}}, calib=calib, seed=seed))
    return recs


def exact_seed_mean_distribution(values: list[float]) -> list[tuple[float, float]]:
    """(mean, probability) of the mean of len(values) draws with replacement, by enumeration."""
    k = len(values)
    counts = Counter(round(sum(values[i] for i in pick) / k, 12)
                     for pick in itertools.product(range(k), repeat=k))
    return sorted((m, c / k ** k) for m, c in counts.items())


def exact_quantile(dist: list[tuple[float, float]], q: float) -> float:
    """Smallest support point whose CDF reaches q."""
    cdf = 0.0
    for value, prob in dist:
        cdf += prob
        if cdf >= q - 1e-12:
            return value
    return dist[-1][0]


def test_two_stage_interval_over_constant_seeds_is_exact():
    table, summary, *_ = retention_with_intervals(seed_records(), Bootstrap(resamples=4000, confidence=0.95, seed=0))
    for seed, v in SEED_VALUES.items():
        for level in ("task", "dimension", "total"):
            row = one(table, seed=seed, level=level)
            for col in ("retention", "retention_low", "retention_high",
                        "chance_adjusted", "chance_adjusted_low", "chance_adjusted_high"):
                assert row[col] == pytest.approx(v, abs=1e-12), (seed, level, col)
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert len(summary) == 3
    for _, row in summary.iterrows():
        assert row["seeds"] == 3
        assert row["retention"] == pytest.approx(0.7, abs=1e-12)
        assert row["retention_sd"] == pytest.approx(0.1, abs=1e-12)
        # all-equal seed draws have probability 1/27 = 3.7% > 2.5% at each end, so the 2.5% and
        # 97.5% quantiles of the exact distribution are its extremes (expected 148 of the 4000
        # resamples at each extreme, sd 12; the 2.5% order statistic is the 100th).
        assert row["retention_low"] == pytest.approx(0.6, abs=1e-12)
        assert row["retention_high"] == pytest.approx(0.8, abs=1e-12)
        assert row["chance_adjusted_low"] == pytest.approx(0.6, abs=1e-12)
        assert row["chance_adjusted_high"] == pytest.approx(0.8, abs=1e-12)


def test_two_stage_interval_at_50_percent_matches_the_enumerated_distribution():
    dist = exact_seed_mean_distribution(list(SEED_VALUES.values()))
    # sums of three draws from {0, 1, 2} (x 0.1): 1, 3, 6, 7, 6, 3, 1 ways out of 27
    assert [round(p * 27) for _, p in dist] == [1, 3, 6, 7, 6, 3, 1]
    low, high = exact_quantile(dist, 0.25), exact_quantile(dist, 0.75)
    # CDF 1/27, 4/27 = 0.148, 10/27 = 0.370, 17/27 = 0.630, 23/27 = 0.852: quartiles at 0.6 + 0.2/3
    # and 0.6 + 0.4/3, each more than 0.1 in probability away from a CDF jump (~14 Monte Carlo sd at
    # 4000 resamples), so the bootstrap should land on them; allowed: one support point (0.1/3) off.
    assert low == pytest.approx(0.6 + 0.2 / 3) and high == pytest.approx(0.6 + 0.4 / 3)
    step = 0.1 / 3
    _, summary, *_ = retention_with_intervals(seed_records(), Bootstrap(resamples=4000, confidence=0.5, seed=0))
    _, wide, *_ = retention_with_intervals(seed_records(), Bootstrap(resamples=4000, confidence=0.95, seed=0))
    for (_, row), (_, w) in zip(summary.iterrows(), wide.iterrows()):
        assert abs(row["retention_low"] - low) <= step + 1e-9
        assert abs(row["retention_high"] - high) <= step + 1e-9
        assert row["retention_low"] > w["retention_low"] and row["retention_high"] < w["retention_high"]


def test_one_seed_summary_equals_the_item_interval():
    recs = two_dimension_records(seeds=(0,))
    table, summary, *_ = retention_with_intervals(recs, Bootstrap(resamples=500, seed=4))
    assert len(summary) == len(table) == 6
    for _, row in table.iterrows():
        s = one(summary, level=row["level"], name=row["name"])
        assert s["seeds"] == 1 and math.isnan(s["retention_sd"]) and math.isnan(s["chance_adjusted_sd"])
        for col in ["retention", "chance_adjusted", *INTERVAL_COLUMNS]:
            assert s[col] == pytest.approx(row[col], abs=1e-12), col


def test_two_stage_interval_carries_seed_and_item_noise():
    """Dense items all 1; three seeds with 60, 65 and 70 ones among 100 items. Given which seeds a
    resample draws (27 equally likely ordered picks), its retention is the count-weighted mean of
    v = mean of the picked seeds' item columns, which for a multinomial draw of 100 items has mean
    mean(v) and variance var(v) / 100 (population variance), close to normal. The two-stage
    interval is the 2.5% and 97.5% quantile of that 27-component normal mixture, here ~[0.565,
    0.736]; a seeds-only bootstrap would give [0.60, 0.70] (1/27 > 2.5% at each end) and an items-
    only interval of one seed ~0.65 +- 0.093. Tolerance 0.01: lattice step 1/300 plus the Monte
    Carlo sd of a 2.5% quantile at 4000 resamples, sqrt(0.025 * 0.975 / 4000) / (mixture density
    ~1.2) = 0.002."""
    from scipy import optimize, stats

    n, ones = 100, {0: 60, 1: 65, 2: 70}
    rng = np.random.default_rng(21)
    cols = {}
    for seed, k in ones.items():
        cols[seed] = np.array([1.0] * k + [0.0] * (n - k))
        rng.shuffle(cols[seed])
    recs = [record("general", {"qa": {"items": np.ones(n)}}, method="dense")]
    recs += [record("general", {"qa": {"items": cols[s]}}, seed=s) for s in ones]
    table, summary, *_ = retention_with_intervals(recs, Bootstrap(resamples=4000, seed=6))

    components = []
    for pick in itertools.product(ones, repeat=3):
        v = sum(cols[s] for s in pick) / 3
        components.append((v.mean(), math.sqrt(v.var() / n)))

    def cdf(x: float) -> float:
        return float(np.mean([stats.norm.cdf(x, m, sd) for m, sd in components]))

    low = optimize.brentq(lambda x: cdf(x) - 0.025, 0, 1)
    high = optimize.brentq(lambda x: cdf(x) - 0.975, 0, 1)
    assert 0.55 < low < 0.58 and 0.72 < high < 0.75
    for _, s in summary.iterrows():
        per_seed = rows(table, level=s["level"], name=s["name"])
        assert s["seeds"] == 3
        assert s["retention"] == pytest.approx(0.65, abs=1e-12)
        assert s["retention_sd"] == pytest.approx(0.05, abs=1e-12)
        assert per_seed["retention"].tolist() == pytest.approx([0.60, 0.65, 0.70], abs=1e-12)
        assert s["retention_low"] == pytest.approx(low, abs=0.01)
        assert s["retention_high"] == pytest.approx(high, abs=0.01)


# --------------------------------------------------------------------------------------------------
# 4, 5. Reproducibility and keyed draws
# --------------------------------------------------------------------------------------------------

def test_intervals_are_reproducible_by_seed():
    recs = two_dimension_records(seeds=(0, 1))
    a = retention_with_intervals(recs, Bootstrap(resamples=300, seed=7))
    b = retention_with_intervals(two_dimension_records(seeds=(0, 1)), Bootstrap(resamples=300, seed=7))
    c = retention_with_intervals(recs, Bootstrap(resamples=300, seed=8))
    for x, y, z in zip(a[:3], b[:3], c[:3]):
        assert x.to_csv() == y.to_csv()
        assert x.to_csv() != z.to_csv()
    bounds = [*INTERVAL_COLUMNS]
    # The bounds move with the bootstrap seed (item intervals and summary);
    # the point estimates do not.
    # (a bound may coincide by chance on the lattice of resampled means, so: nearly all).
    assert (a[0][bounds].to_numpy() != c[0][bounds].to_numpy()).mean() > 0.8
    assert (a[1][bounds].to_numpy() != c[1][bounds].to_numpy()).mean() > 0.8
    pd.testing.assert_frame_equal(a[0].drop(columns=bounds), c[0].drop(columns=bounds))


def test_adding_a_calibration_set_or_model_leaves_other_intervals_unchanged():
    boot = Bootstrap(resamples=400, seed=5)
    base = two_dimension_records(seeds=(0, 1), calibs=("web",))
    table, summary, *_ = retention_with_intervals(base, boot)
    # A set sorting before "web" (so a sequential generator would hand it the first draws), and a
    # second model with its own dense records, placed first in the list.
    more = [r for r in two_dimension_records(seeds=(0, 1), calibs=("code",), base_seed=1)
            if r["method"] != "dense"]
    other_model = two_dimension_records(seeds=(0,), calibs=("code",), model="alpha", base_seed=2)
    table2, summary2, *_ = retention_with_intervals(other_model + more + base, boot)
    assert set(table2["calib"]) == {"code", "web"} and set(table2["model"]) == {"alpha", MODEL}

    def web(t):
        return rows(t, model=MODEL, calib="web").reset_index(drop=True)

    pd.testing.assert_frame_equal(web(table), web(table2))
    pd.testing.assert_frame_equal(web(summary), web(summary2))


# --------------------------------------------------------------------------------------------------
# 6. Perplexity
# --------------------------------------------------------------------------------------------------

def perplexity_records(n: int = 300, seed: int = 0, shift_score: float | None = None):
    """A word-perplexity task: item score = total log-likelihood, weight = word count."""
    rng = np.random.default_rng(seed)
    words = rng.integers(20, 200, n).astype(float)
    dense_ll = -3.0 * words + rng.normal(0, 2, n) * np.sqrt(words)
    pruned_ll = dense_ll - 1.0 * words + rng.normal(0, 1, n) * np.sqrt(words)
    spec = {"metric": "word_perplexity,none", "chance": None, "higher_is_better": False,
            "aggregation": "perplexity", "weights": words}
    dense = record("language", {"ppl": {**spec, "items": dense_ll}}, method="dense")
    pruned_spec = {**spec, "items": pruned_ll}
    if shift_score is not None:
        pruned_spec["score"] = shift_score
    pruned = record("language", {"ppl": pruned_spec})
    return [dense, pruned], words, dense_ll, pruned_ll


def test_perplexity_retention_is_dense_over_pruned_from_items(caplog):
    recs, words, dense_ll, pruned_ll = perplexity_records()
    dense_ppl = math.exp(-dense_ll.sum() / words.sum())
    pruned_ppl = math.exp(-pruned_ll.sum() / words.sum())
    assert 15 < dense_ppl < 25 and 40 < pruned_ppl < 70  # ~e^3 and ~e^4
    # the JSON scores agree with the items
    assert recs[0]["tasks"]["ppl"]["score"] == pytest.approx(dense_ppl, rel=1e-12)
    assert recs[1]["tasks"]["ppl"]["score"] == pytest.approx(pruned_ppl, rel=1e-12)
    with caplog.at_level(logging.WARNING):
        table, summary, *_ = retention_with_intervals(recs, Bootstrap(resamples=4000, seed=0))
    assert "by its items but" not in caplog.text  # the consistency check found nothing to flag
    task = one(table, level="task")
    assert task["score"] == pytest.approx(pruned_ppl, rel=1e-12)
    assert task["dense_score"] == pytest.approx(dense_ppl, rel=1e-12)
    assert task["retention"] == pytest.approx(dense_ppl / pruned_ppl, rel=1e-12)
    assert task["retention"] < 1
    assert math.isnan(task["chance"])
    for _, row in table.iterrows():
        assert row["chance_adjusted"] == row["retention"]
        assert row["chance_adjusted_low"] == row["retention_low"]
        assert row["chance_adjusted_high"] == row["retention_high"]
        assert row["retention_low"] < row["retention"] < row["retention_high"]

    # Delta method. retention = exp((sum p - sum d) / sum w) = exp(r), r a ratio estimator of
    # z_i = p_i - d_i over w_i whose bootstrap sd is sqrt(mean((z - r w)^2) / n) / mean(w);
    # the interval is exp(r +- 1.96 sd). If the resample kept the full word count as denominator
    # the sd would be sqrt(var(z) / n) / mean(w), about 5 times larger here.
    z = pruned_ll - dense_ll
    r = z.sum() / words.sum()
    sd = math.sqrt(np.mean((z - r * words) ** 2) / len(z)) / words.mean()
    sd_wrong = math.sqrt(np.var(z) / len(z)) / words.mean()
    assert sd_wrong > 3 * sd
    assert task["retention"] == pytest.approx(math.exp(r), rel=1e-12)
    # Tolerance: 10% of the half-width in log space (Monte Carlo sd of a 2.5% quantile at 4000
    # resamples is ~2% of it; the ratio estimator's skew at n = 300 is smaller).
    assert math.log(task["retention_low"]) == pytest.approx(r - Z975 * sd, abs=0.1 * Z975 * sd)
    assert math.log(task["retention_high"]) == pytest.approx(r + Z975 * sd, abs=0.1 * Z975 * sd)


def test_items_disagreeing_with_the_reported_score_are_flagged(caplog):
    recs, words, _, pruned_ll = perplexity_records(shift_score=99.0)
    with caplog.at_level(logging.WARNING, logger="calmix.analysis.intervals"):
        table, _, *_ = retention_with_intervals(recs, Bootstrap(resamples=200, seed=0))
    assert str(items_path(recs[1]["path"])) in caplog.text
    # the point estimate follows the reported score, as in retention_table
    assert one(table, level="task")["score"] == 99.0


# --------------------------------------------------------------------------------------------------
# 7. Errors and files
# --------------------------------------------------------------------------------------------------

def test_pruned_items_on_other_documents_are_an_error_naming_the_file():
    rng = np.random.default_rng(0)
    dense = record("general", {"qa": {"items": binary(rng, 30, 0.5)}}, method="dense")
    pruned = record("general", {"qa": {"items": binary(rng, 30, 0.5), "doc_ids": np.arange(30) + 1}})
    with pytest.raises(ValueError, match="items of task 'qa' differ") as err:
        retention_with_intervals([dense, pruned], Bootstrap(resamples=50))
    assert str(items_path(pruned["path"])) in str(err.value)
    # a different number of items is the same error
    short = record("general", {"qa": {"items": binary(rng, 29, 0.5)}})
    with pytest.raises(ValueError, match="differ") as err:
        retention_with_intervals([dense, short], Bootstrap(resamples=50))
    assert str(items_path(short["path"])) in str(err.value)


def test_items_in_another_order_are_paired_by_document():
    """Rows of the items file in a different order still pair by (leaf, doc_id)."""
    rng = np.random.default_rng(1)
    scores = binary(rng, 60, 0.5)
    dense = record("general", {"qa": {"items": scores}}, method="dense")
    pruned = record("general", {"qa": {"items": scores}})
    pruned["items"] = pruned["items"].iloc[::-1].reset_index(drop=True)
    table, _, *_ = retention_with_intervals([dense, pruned], Bootstrap(resamples=200))
    assert table[["retention_low", "retention_high"]].to_numpy() == pytest.approx(1.0, abs=1e-12)


def test_records_without_items_are_an_error():
    recs = two_dimension_records()
    del recs[-1]["items"]
    with pytest.raises(ValueError, match="items=True"):
        retention_with_intervals(recs, Bootstrap(resamples=50))
    recs = two_dimension_records()
    recs[-1]["items"] = recs[-1]["items"].iloc[:0]
    with pytest.raises(ValueError, match="no items for task"):
        retention_with_intervals(recs, Bootstrap(resamples=50))


def write_record(rec: dict, path) -> None:
    body = {k: v for k, v in rec.items() if k not in ("items", "path")}
    path.write_text(json.dumps(body))
    frame = rec["items"]
    items = [{"task": r.task, "leaf": r.leaf, "doc_id": int(r.doc_id), "score": float(r.score),
              "weight": float(r.weight)} for r in frame.itertuples()]
    write_items(items, items_path(path))


def test_load_eval_records_reads_items_and_intervals_match_in_memory(tmp_path):
    # general and math (mean tasks, weight 1) plus language (a perplexity task with word counts),
    # seeds 0 and 1 of calib "web"
    (ppl_dense, ppl_seed0), *_ = perplexity_records(n=40, seed=0)
    ppl_seed1 = {**perplexity_records(n=40, seed=1)[0][1], "seed": 1}
    recs = two_dimension_records(seeds=(0, 1)) + [ppl_dense, ppl_seed0, ppl_seed1]
    paths = []
    for i, rec in enumerate(recs):
        p = tmp_path / f"r{i}.json"
        write_record(rec, p)
        paths.append(p)
        assert items_path(p) == tmp_path / f"r{i}.items.parquet"
    loaded = load_eval_records(paths, items=True)
    assert [r["path"] for r in loaded] == [str(p) for p in paths]
    for rec, back in zip(recs, loaded):
        assert back["tasks"] == json.loads(json.dumps(rec["tasks"]))
        for col in ("task", "leaf", "doc_id", "score"):
            assert back["items"][col].tolist() == rec["items"][col].tolist()
        assert back["items"]["weight"].tolist() == rec["items"]["weight"].tolist()
    boot = Bootstrap(resamples=300, seed=1)
    for a, b in zip(retention_with_intervals(recs, boot), retention_with_intervals(loaded, boot)):
        pd.testing.assert_frame_equal(a, b)


def test_missing_items_file_is_an_error_naming_it(tmp_path):
    rec = two_dimension_records()[0]
    p = tmp_path / "general.json"
    write_record(rec, p)
    assert load_eval_records([p], items=True)[0]["items"]["score"].tolist() == rec["items"]["score"].tolist()
    assert "items" not in load_eval_records([p])[0]
    items_path(p).unlink()
    with pytest.raises(FileNotFoundError, match="general.items.parquet"):
        load_eval_records([p], items=True)
    assert load_eval_records([p])[0]["dimension"] == rec["dimension"]  # items=False does not need it


# --------------------------------------------------------------------------------------------------
# 8. Point estimates and containment
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: two_dimension_records(seeds=(0, 1, 2), calibs=("web", "code")),
    paired_records,
    lambda: perplexity_records()[0],
    seed_records,
])
def test_intervals_add_columns_without_moving_the_estimates(make):
    recs = make()
    table, summary, *_ = retention_with_intervals(recs, Bootstrap(resamples=500, seed=0))
    plain = retention_table(recs)
    assert list(table.columns) == RETENTION_COLUMNS + INTERVAL_COLUMNS
    pd.testing.assert_frame_equal(table[RETENTION_COLUMNS], plain)
    for value in ("retention", "chance_adjusted"):
        for frame in (table, summary):
            point, low, high = (frame[c].to_numpy(float) for c in (value, f"{value}_low", f"{value}_high"))
            finite = np.isfinite(low) & np.isfinite(high)
            assert finite.all()
            assert (low[finite] <= point[finite] + 1e-12).all() and (point[finite] <= high[finite] + 1e-12).all()
    # one summary row per (set, level, name) with the mean over its seeds
    assert len(summary) == len(table.drop_duplicates(["calib", "level", "name"]))
    for _, s in summary.iterrows():
        per_seed = rows(table, calib=s["calib"], level=s["level"], name=s["name"])
        assert s["seeds"] == len(per_seed)
        assert s["retention"] == pytest.approx(per_seed["retention"].mean(), abs=1e-12)


def test_hand_computed_point_estimates_and_dimension_means():
    recs = two_dimension_records(seeds=(0,))
    table, _, *_ = retention_with_intervals(recs, Bootstrap(resamples=100))
    dense = {t: recs[i]["tasks"][t]["score"] for i in (0, 1) for t in recs[i]["tasks"]}
    pruned = {t: recs[i]["tasks"][t]["score"] for i in (2, 3) for t in recs[i]["tasks"]}
    ret = {t: pruned[t] / dense[t] for t in dense}
    adj = {"gen_mc": (pruned["gen_mc"] - 0.25) / (dense["gen_mc"] - 0.25),
           "gen_qa": ret["gen_qa"], "math_gsm": ret["math_gsm"]}
    for t in dense:
        assert one(table, level="task", name=t)["retention"] == pytest.approx(ret[t], rel=1e-12)
        assert one(table, level="task", name=t)["chance_adjusted"] == pytest.approx(adj[t], rel=1e-12)
    general = (ret["gen_mc"] + ret["gen_qa"]) / 2
    general_adj = (adj["gen_mc"] + adj["gen_qa"]) / 2
    assert one(table, level="dimension", name="general")["retention"] == pytest.approx(general, rel=1e-12)
    assert one(table, level="total")["retention"] == pytest.approx((general + ret["math_gsm"]) / 2, rel=1e-12)
    assert one(table, level="total")["chance_adjusted"] == pytest.approx(
        (general_adj + adj["math_gsm"]) / 2, rel=1e-12)


def test_pruned_record_with_fewer_tasks_than_dense():
    """retention_table accepts a pruned record that evaluated a subset of the dense tasks (its
    dimension is the mean over the tasks it has); the intervals should cover the same rows."""
    rng = np.random.default_rng(3)
    a, b = binary(rng, 50, 0.6), binary(rng, 50, 0.6)
    dense = record("general", {"a": {"items": a}, "b": {"items": b}}, method="dense")
    pruned = record("general", {"a": {"items": a}})
    plain = retention_table([dense, pruned])
    assert plain["retention"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    table, _, *_ = retention_with_intervals([dense, pruned], Bootstrap(resamples=100))
    pd.testing.assert_frame_equal(table[RETENTION_COLUMNS], plain)
    assert table[INTERVAL_COLUMNS].to_numpy() == pytest.approx(1.0, abs=1e-12)


def test_seeds_evaluated_on_different_dimensions_summarise_the_seeds_each_row_has():
    recs = [r for r in two_dimension_records(seeds=(0, 1))
            if not (r["seed"] == 1 and r["dimension"] == "math")]
    table, summary, *_ = retention_with_intervals(recs, Bootstrap(resamples=100))
    by_name = summary.set_index("name")["seeds"]
    assert by_name["general"] == 2 and by_name["math"] == 1 and by_name["math_gsm"] == 1


def test_over_sets_is_the_mean_of_the_sets_with_an_exact_interval():
    # Two sets without item noise: web with seeds 0.6/0.7/0.8, code with one seed at 0.4. Only web's
    # seed draw varies, so the mean over sets is (web's seed mean + 0.4) / 2, exactly enumerable.
    recs = seed_records()
    recs += [r for r in seed_records({0: 0.4}, calib="code") if r["method"] != "dense"]
    _, summary, sets, *_ = retention_with_intervals(recs, Bootstrap(resamples=4000, seed=0))
    row = sets[sets.level == "total"].iloc[0]
    assert row.sets == 2 and row.retention == pytest.approx((0.7 + 0.4) / 2)
    assert (row.retention_low, row.retention_high) == pytest.approx(((0.6 + 0.4) / 2, (0.8 + 0.4) / 2))
    assert row.chance_adjusted == pytest.approx(row.retention)  # generation: chance 0
    assert set(sets.level) == {"task", "dimension", "total"}


def test_comparisons_of_built_sets_are_paired_differences_with_exact_intervals():
    # web: seeds 0.6/0.7/0.8 (mean 0.7, the best single source); code: one seed at 0.4; the mix "m":
    # one seed at 0.9. No item noise, so m - web = 0.9 - (web's seed mean): 0.2 [0.1, 0.3] exactly.
    recs = seed_records()
    recs += [r for r in seed_records({0: 0.4}, calib="code") if r["method"] != "dense"]
    recs += [r for r in seed_records({0: 0.9}, calib="m") if r["method"] != "dense"]
    pairs = builder_comparisons(["web", "code"], {"m": "mix"}, baseline="code")
    compared = retention_with_intervals(recs, Bootstrap(resamples=4000, seed=0), pairs).comparisons
    total = compared[compared.level == "total"].set_index("versus")
    assert list(total.comparison) == ["m vs best single source", "m vs code"]
    assert total.at["web", "difference"] == pytest.approx(0.2)
    assert (total.at["web", "difference_low"], total.at["web", "difference_high"]) == pytest.approx((0.1, 0.3))
    assert total.at["code", "difference"] == pytest.approx(0.5)
    assert (total.at["code", "difference_low"], total.at["code", "difference_high"]) == pytest.approx((0.5, 0.5))


def test_pairs_of_single_sources_are_paired_differences_with_exact_intervals():
    # web: seeds 0.6/0.7/0.8; code: one seed at 0.4; math: one seed at 0.9; the mix "m" is no single
    # source. No item noise, so each difference is a seed mean minus a constant: exactly enumerable
    # (1/27 > 2.5% at each end of web's seed mean, as above).
    recs = seed_records()
    for calib, value in (("code", 0.4), ("math", 0.9), ("m", 0.5)):
        recs += [r for r in seed_records({0: value}, calib=calib) if r["method"] != "dense"]
    pairs = source_pairs(["web", "code", "math"])
    tables = retention_with_intervals(recs, Bootstrap(resamples=4000, seed=0), pairs=pairs)
    total = tables.source_pairs[tables.source_pairs.level == "total"].set_index("comparison")
    assert list(total.index) == ["web vs code", "web vs math", "code vs math"]  # the sources' order, no built set
    want = {"web vs code": (0.3, 0.2, 0.4), "web vs math": (-0.2, -0.3, -0.1), "code vs math": (-0.5, -0.5, -0.5)}
    for label, (diff, low, high) in want.items():
        row = total.loc[label]
        assert (row.difference, row.difference_low, row.difference_high) == pytest.approx((diff, low, high))
    assert list(total.seeds) == [3, 3, 1] and list(total.versus_seeds) == [1, 1, 1]
    apart = separated_pairs(tables.source_pairs).set_index("name")
    assert apart.loc["total", ["pairs", "separated"]].tolist() == [3, 3]
    assert tables.comparisons.empty  # no builder comparisons asked for


def test_pairs_of_sources_are_those_of_the_main_block_only():
    """A pruning.compare grid's setting (not in swept) and a data-free one get no pairs."""
    base = two_dimension_records(seeds=(0,), calibs=("web", "code"))
    pruned = [r for r in base if r["method"] != "dense"]
    recs = base + [{**r, "method": "wanda"} for r in pruned]
    recs += [{**r, "method": "magnitude", "calib": "none"} for r in pruned if r["calib"] == "web"]
    pairs = source_pairs(["web", "code"], {(METHOD, TARGET), ("magnitude", TARGET)})
    table = retention_with_intervals(recs, Bootstrap(resamples=50, seed=0), pairs=pairs).source_pairs
    assert set(zip(table.method, table.comparison)) == {(METHOD, "web vs code")}


def test_comparison_of_sets_scored_alike_item_by_item_has_no_item_noise():
    rng = np.random.default_rng(0)
    dense, pruned = binary(rng, 300, 0.9), binary(rng, 300, 0.6)
    recs = [record("general", {"qa": {"items": dense}}, method="dense"),
            record("general", {"qa": {"items": pruned}}, calib="web"),
            record("general", {"qa": {"items": pruned}}, calib="igsp")]
    recs += [record("general", {"qa": {"items": pruned}}, calib=c) for c in ("selfcal", "sgs")]
    pairs = builder_comparisons(["web"], {"igsp": "igsp", "selfcal": "selfcal", "sgs": "sgs"}, baseline="web")
    tables = retention_with_intervals(recs, Bootstrap(resamples=500, seed=0), pairs)
    total = tables.comparisons[tables.comparisons.level == "total"]
    assert {"igsp vs selfcal", "igsp vs sgs", "igsp vs best single source"} <= set(total.comparison)
    assert (total[["difference", "difference_low", "difference_high"]].to_numpy() == 0).all()
    single = tables.over_seeds[(tables.over_seeds.calib == "web") & (tables.over_seeds.level == "total")].iloc[0]
    assert single.retention_high - single.retention_low > 0.05  # while each set alone has item noise


# --------------------------------------------------------------------------------------------------
# 9. Pruning targets and method labels
# --------------------------------------------------------------------------------------------------

def test_targets_are_kept_as_labels_and_each_setting_is_summarised_apart():
    """Unstructured ("0.6") and N:M ("2:4", "4:8") targets and a method with a sparsity profile
    ("wanda-owl") are table keys as the eval records hold them, one setting each, never parsed."""
    base = two_dimension_records(seeds=(0, 1), calibs=("web", "code", "mix"))
    pruned = [r for r in base if r["method"] != "dense"]
    recs = base + [{**r, "sparsity": t} for t in ("2:4", "4:8") for r in pruned]
    recs += [{**r, "method": "wanda-owl", "sparsity": "2:4"} for r in pruned]
    compared = builder_comparisons(["web", "code"], {"mix": "mix"}, baseline=None)
    tables = retention_with_intervals(recs, Bootstrap(resamples=200, seed=0), compared, source_pairs(["web", "code"]))
    settings = {(METHOD, "0.6"), (METHOD, "2:4"), (METHOD, "4:8"), ("wanda-owl", "2:4")}
    for frame in tables:
        assert "sparsity" not in frame.columns
        assert set(zip(frame["method"], frame["target"])) == settings
        assert all(isinstance(t, str) for t in frame["target"])
    over_sets = tables.over_sets[tables.over_sets.level == "total"]
    assert len(over_sets) == len(settings) and (over_sets.sets == 3).all()
    for differences in (tables.comparisons, tables.source_pairs):  # mix vs the best; web vs code
        assert len(differences[differences.level == "total"]) == len(settings)
    # the same scores under every target: the same point estimates, setting by setting
    for frame in tables:
        cols = [c for c in ("calib", "level", "name", "retention", "difference") if c in frame]
        want = frame[(frame.method == METHOD) & (frame.target == "0.6")][cols].reset_index(drop=True)
        for t in ("2:4", "4:8"):
            got = frame[(frame.method == METHOD) & (frame.target == t)][cols].reset_index(drop=True)
            pd.testing.assert_frame_equal(got, want)


def test_adding_a_target_leaves_the_other_targets_intervals_unchanged():
    boot = Bootstrap(resamples=300, seed=4)
    base = two_dimension_records(seeds=(0, 1))
    more = [{**r, "sparsity": "2:4"} for r in two_dimension_records(seeds=(0, 1), base_seed=3)
            if r["method"] != "dense"]
    alone, together = retention_with_intervals(base, boot), retention_with_intervals(more + base, boot)
    for a, b in zip(alone, together):
        pd.testing.assert_frame_equal(a.reset_index(drop=True),
                                      b[b.target == TARGET].reset_index(drop=True))


def test_target_labels_are_read_from_the_records_as_they_are(tmp_path):
    recs = [two_dimension_records()[0]]
    recs += [{**r, "sparsity": t} for t in ("2:4", "0.6") for r in two_dimension_records()[2:3]]
    paths = []
    for i, rec in enumerate(recs):
        write_record(rec, tmp_path / f"r{i}.json")
        paths.append(tmp_path / f"r{i}.json")
    loaded = load_eval_records(paths, items=True)
    assert [r["sparsity"] for r in loaded] == ["dense", "2:4", "0.6"]
    assert list(retention_table(loaded).drop_duplicates("target").target) == ["0.6", "2:4"]
    numeric = tmp_path / "numeric.json"
    numeric.write_text(json.dumps({**json.loads(paths[1].read_text()), "sparsity": 0.5}))
    with pytest.raises(ValueError, match=r"numeric\.json.*target label"):
        load_eval_records([numeric])
