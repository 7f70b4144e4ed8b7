"""Tests of gold-probability retention (calmix.analysis.gold_probability) and of the report's section
"A continuous score beside accuracy".

Every expected number is derived without the module: numpy means over constructed items, exact
enumeration of a discrete bootstrap distribution, scipy's spearmanr and an enumeration of all
re-pairings for p. That the interval pairs dense and pruned items by the same draw is checked twice:
a pruned model whose gold probabilities are exactly c times the dense model's has the interval
[c, c] (any unpaired draw would spread it), and with scores equal to the gold probabilities the
interval equals the accuracy interval of calmix.analysis.intervals draw for draw.
"""

from __future__ import annotations

import itertools
import json
import logging

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from calmix.analysis import report
from calmix.analysis.correlation import CORRELATION_COLUMNS
from calmix.analysis.gold_probability import (AGREEMENT_COLUMNS, GOLD_PROB_COLUMNS, gold_prob_retention,
                                              rank_agreement)
from calmix.analysis.intervals import Bootstrap, retention_with_intervals
from calmix.analysis.retention import load_eval_records
from calmix.evaluation.items import write_items

MODEL, METHOD, TARGET = "world", "sparsegpt", "0.6"
SETTING = (MODEL, METHOD, TARGET)
BOOT = Bootstrap(resamples=1000)


def record(dimension: str, tasks: dict[str, dict], *, method: str = METHOD, calib: str | None = "A",
           seed: int | None = 0) -> dict:
    """An eval record with its items; ``tasks[name]``: "scores", and "gold" (None: no gold_prob column)."""
    target = TARGET
    if method == "dense":
        calib, seed, target = None, None, "dense"
    entries, frames = {}, []
    for name, spec in tasks.items():
        scores = np.asarray(spec["scores"], float)
        entries[name] = {"metric": "acc,none", "num_fewshot": 0, "score": float(scores.mean()), "stderr": 0.01,
                         "chance": 0.25, "n": len(scores), "higher_is_better": True, "aggregation": "mean"}
        frame = pd.DataFrame({"task": name, "leaf": name, "doc_id": np.arange(len(scores)), "score": scores,
                              "weight": 1.0})
        if spec.get("gold") is not None:
            frame["gold_prob"] = np.asarray(spec["gold"], float)
        frames.append(frame)
    return {"model": MODEL, "method": method, "sparsity": target, "calib": calib, "seed": seed,
            "dimension": dimension, "settings": {}, "tasks": entries,
            "path": f"/evals/{MODEL}/{method}/{calib}/seed{seed}/{dimension}.json",
            "items": pd.concat(frames, ignore_index=True)}


def tables_of(records: list[dict]) -> pd.DataFrame:
    return gold_prob_retention(records, retention_with_intervals(records, BOOT), BOOT)


def one(table: pd.DataFrame, **where) -> pd.Series:
    mask = np.logical_and.reduce([(table[c] == v).fillna(False).to_numpy(bool) for c, v in where.items()])
    assert mask.sum() == 1, where
    return table[mask].iloc[0]


def over_seeds(table: pd.DataFrame, **where) -> pd.Series:
    return one(table[table["seed"].isna()], **where)


def test_point_estimate_is_the_ratio_of_means_over_the_items_both_have():
    rng = np.random.default_rng(1)
    n = 120
    dense_gold = rng.uniform(0.2, 0.9, n)
    pruned_gold = rng.uniform(0.1, 0.8, n)
    dense_gold[3] = np.nan  # e.g. several gold choices: out of both means
    pruned_gold[7] = np.nan
    acc = (rng.random(n) < 0.7).astype(float)
    recs = [record("general", {"mc": {"scores": acc, "gold": dense_gold},
                               "qa": {"scores": acc[:50]}}, method="dense"),
            record("general", {"mc": {"scores": acc[::-1].copy(), "gold": pruned_gold},
                               "qa": {"scores": acc[:50][::-1].copy()}})]
    table = tables_of(recs)
    assert list(table.columns) == GOLD_PROB_COLUMNS
    assert list(table["task"]) == ["mc", "mc"]  # qa has no gold probabilities: no row
    row = one(table, seed=0)
    keep = np.isfinite(dense_gold) & np.isfinite(pruned_gold)
    assert row["items"] == n - 2
    assert row.gold_prob == pytest.approx(pruned_gold[keep].mean(), rel=1e-12)
    assert row.dense_gold_prob == pytest.approx(dense_gold[keep].mean(), rel=1e-12)
    assert row.gold_prob_retention == pytest.approx(pruned_gold[keep].mean() / dense_gold[keep].mean(), rel=1e-12)
    assert row.accuracy_retention == pytest.approx(acc[::-1].mean() / acc.mean(), rel=1e-12)
    assert row.gold_prob_retention_low < row.gold_prob_retention < row.gold_prob_retention_high


def test_the_interval_draws_dense_and_pruned_items_alike():
    """Pruned = c x dense item by item: a paired resample's ratio is exactly c, whatever the draw."""
    rng = np.random.default_rng(2)
    dense_gold = rng.uniform(0.05, 0.95, 200)  # widely spread: an unpaired draw would give a wide interval
    acc = (rng.random(200) < 0.6).astype(float)
    recs = [record("general", {"mc": {"scores": acc, "gold": dense_gold}}, method="dense")]
    factors = {("A", 0): 0.8, ("A", 1): 0.9, ("B", 0): 0.5}
    for (calib, seed), c in factors.items():
        recs.append(record("general", {"mc": {"scores": acc, "gold": c * dense_gold}}, calib=calib, seed=seed))
    table = tables_of(recs)
    for (calib, seed), c in factors.items():
        row = one(table, calib=calib, seed=seed)
        assert row.gold_prob_retention == pytest.approx(c, rel=1e-12)
        assert row.gold_prob_retention_low == pytest.approx(c, rel=1e-12)
        assert row.gold_prob_retention_high == pytest.approx(c, rel=1e-12)
    # over seeds: each resample is the mean of 2 seeds drawn with replacement from {0.8, 0.9}: 0.8 with
    # probability 1/4, 0.85 with 1/2, 0.9 with 1/4; the 2.5% and 97.5% quantiles of 1000 such resamples
    # are 0.8 and 0.9 unless fewer than 26 of either extreme come up (probability < 1e-60).
    a = over_seeds(table, calib="A")
    assert (a.seeds, a["items"]) == (2, 200)
    assert a.gold_prob_retention == pytest.approx(0.85, rel=1e-12)
    assert (a.gold_prob_retention_low, a.gold_prob_retention_high) == pytest.approx((0.8, 0.9), rel=1e-12)
    assert a.gold_prob == pytest.approx(0.85 * dense_gold.mean(), rel=1e-12)
    b = over_seeds(table, calib="B")  # one seed: the item interval
    assert b.seeds == 1 and (b.gold_prob_retention_low, b.gold_prob_retention_high) == pytest.approx((0.5, 0.5))


def test_the_interval_uses_the_accuracy_intervals_draws():
    """With scores equal to the gold probabilities, both retentions are one statistic: their intervals must
    agree draw for draw, per checkpoint (the keyed item counts) and over seeds (the keyed seed draw)."""
    rng = np.random.default_rng(3)
    dense_gold = rng.uniform(0.2, 0.9, 150)
    recs = [record("general", {"mc": {"scores": dense_gold, "gold": dense_gold}}, method="dense")]
    for calib in ("A", "B"):
        for seed in (0, 1, 2):
            gold = np.clip(dense_gold * rng.uniform(0.6, 1.0, 150), 0, 1)
            recs.append(record("general", {"mc": {"scores": gold, "gold": gold}}, calib=calib, seed=seed))
    tables = retention_with_intervals(recs, BOOT)
    table = gold_prob_retention(recs, tables, BOOT)
    assert len(table) == 2 * (3 + 1)
    for col in ("", "_low", "_high"):
        np.testing.assert_allclose(table[f"gold_prob_retention{col}"], table[f"accuracy_retention{col}"], rtol=1e-12)
    # and the accuracy columns are the retention tables' own
    task = tables.per_checkpoint[tables.per_checkpoint["level"] == "task"]
    for r in task.itertuples():
        row = one(table, calib=r.calib, seed=r.seed)
        assert (row.accuracy_retention_low, row.accuracy_retention_high) == (r.retention_low, r.retention_high)
    summary = tables.over_seeds[tables.over_seeds["level"] == "task"]
    for r in summary.itertuples():
        row = over_seeds(table, calib=r.calib)
        assert (row.accuracy_retention, row.accuracy_retention_low) == (r.retention, r.retention_low)
        assert row.seeds == r.seeds == 3


def test_no_gold_probabilities_give_an_empty_table_and_one_side_warns(caplog):
    rng = np.random.default_rng(4)
    acc = (rng.random(60) < 0.5).astype(float)
    old = [record("general", {"mc": {"scores": acc}}, method="dense"), record("general", {"mc": {"scores": acc}})]
    empty = tables_of(old)
    assert empty.empty and list(empty.columns) == GOLD_PROB_COLUMNS
    assert rank_agreement(empty, [SETTING], ["A"]).columns.tolist() == AGREEMENT_COLUMNS
    mixed = [record("general", {"mc": {"scores": acc}}, method="dense"),
             record("general", {"mc": {"scores": acc, "gold": rng.uniform(0, 1, 60)}})]
    with caplog.at_level(logging.WARNING):
        assert tables_of(mixed).empty
    assert "no gold-choice probabilities" in caplog.text and "/evals/world/dense/None/seedNone" in caplog.text


def test_items_read_from_files_carry_their_gold_probabilities(tmp_path):
    """Through write_items and load_eval_records(items=True), as the retention rule reads them."""
    rng = np.random.default_rng(5)
    gold = {"dense": rng.uniform(0.3, 0.9, 40), "pruned": rng.uniform(0.2, 0.8, 40)}
    paths = []
    for name, rec in (("dense", record("general", {"mc": {"scores": np.ones(40), "gold": gold["dense"]}},
                                       method="dense")),
                      ("pruned", record("general", {"mc": {"scores": np.ones(40), "gold": gold["pruned"]}}))):
        path = tmp_path / name / "general.json"
        path.parent.mkdir()
        items = rec.pop("items")
        rec.pop("path")
        path.write_text(json.dumps(rec))
        write_items(items.to_dict("records"), tmp_path / name / "general.items.parquet")
        paths.append(path)
    table = tables_of(load_eval_records(paths, items=True))
    row = one(table, seed=0)
    assert row.gold_prob_retention == pytest.approx(gold["pruned"].mean() / gold["dense"].mean(), rel=1e-12)


def exact_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided permutation p of Spearman rho over all n! re-pairings, by enumeration."""
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    observed = abs(np.corrcoef(rx, ry)[0, 1])
    hits = [abs(np.corrcoef(rx, ry[list(perm)])[0, 1]) >= observed - 1e-12
            for perm in itertools.permutations(range(len(x)))]
    return float(np.mean(hits))


def agreement_table(seed: int = 6) -> tuple[pd.DataFrame, list[str]]:
    """Over-seeds and checkpoint rows of two tasks for six sources, a built set and a setting outside the block."""
    rng = np.random.default_rng(seed)
    sources = ["A", "B", "C", "D", "E", "F"]
    rows = []
    for setting in (SETTING, (MODEL, "wanda", "2:4")):
        for calib in [*sources, "mix"]:
            for task in ("mc1", "mc2"):
                for seed_value in (0, 1, pd.NA):
                    acc, gp = rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0)
                    rows.append({**dict(zip(["model", "method", "target"], setting)), "calib": calib,
                                 "seed": seed_value, "seeds": 2 if seed_value is pd.NA else 1, "dimension": "general",
                                 "task": task, "items": 100, "gold_prob": gp, "dense_gold_prob": 1.0,
                                 "gold_prob_retention": gp, "gold_prob_retention_low": gp - rng.uniform(0.01, 0.05),
                                 "gold_prob_retention_high": gp + rng.uniform(0.01, 0.05),
                                 "accuracy_retention": acc, "accuracy_retention_low": acc - rng.uniform(0.05, 0.2),
                                 "accuracy_retention_high": acc + rng.uniform(0.05, 0.2)})
    table = pd.DataFrame(rows, columns=GOLD_PROB_COLUMNS)
    table["seed"] = table["seed"].astype("Int64")
    return table, sources


def test_rank_agreement_is_spearman_across_single_sources_over_seeds():
    table, sources = agreement_table()
    agreement = rank_agreement(table, [SETTING], sources)
    assert list(agreement["task"]) == ["mc1", "mc2"] and set(agreement["method"]) == {METHOD}
    for row in agreement.itertuples():
        g = table[(table["method"] == METHOD) & table["seed"].isna() & table["calib"].isin(sources)
                  & (table["task"] == row.task)]
        assert len(g) == 6  # the built set "mix" and the checkpoint rows are left out
        x, y = g["accuracy_retention"].to_numpy(), g["gold_prob_retention"].to_numpy()
        assert row.rho == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
        assert row.n == 6 and row.p_method == "exact"
        assert row.p == pytest.approx(exact_p(x, y), abs=1e-9)
        assert row.best_accuracy == g["calib"].iat[int(np.argmax(x))]
        assert row.best_gold_prob == g["calib"].iat[int(np.argmax(y))]
        half = (g["accuracy_retention_high"] - g["accuracy_retention_low"]).to_numpy() / 2
        assert row.accuracy_half_width == pytest.approx(np.median(half), rel=1e-12)
        half = (g["gold_prob_retention_high"] - g["gold_prob_retention_low"]).to_numpy() / 2
        assert row.gold_prob_half_width == pytest.approx(np.median(half), rel=1e-12)
    few = rank_agreement(table, [SETTING], sources[:2])
    assert few["rho"].isna().all() and (few["n"] == 2).all()


def report_records() -> list[dict]:
    """Three single sources, two seeds, one multiple-choice task with gold probabilities and one without."""
    rng = np.random.default_rng(7)
    n = 200
    dense_gold = rng.uniform(0.3, 0.9, n)
    acc = (rng.random(n) < 0.7).astype(float)
    recs = [record("general", {"mc": {"scores": acc, "gold": dense_gold}, "qa": {"scores": acc}}, method="dense")]
    for i, calib in enumerate(("A", "B", "C")):
        for seed in (0, 1):
            keep = rng.random(n) < 0.9 - 0.1 * i
            gold = dense_gold * rng.uniform(0.7 - 0.1 * i, 0.9 - 0.1 * i, n)
            recs.append(record("general", {"mc": {"scores": acc * keep, "gold": gold}, "qa": {"scores": acc * keep}},
                               calib=calib, seed=seed))
    return recs


def write(tmp_path, records: list[dict], with_gold: bool = True) -> tuple[str, pd.DataFrame]:
    tables = retention_with_intervals(records, BOOT)
    gold = gold_prob_retention(records, tables, BOOT)
    metrics = pd.DataFrame([{"model": MODEL, "calib": c, "seed": 0, "perplexity": 1.0} for c in "ABC"])
    text = report.write_markdown(tables.over_seeds, tables.over_sets, tables.per_checkpoint,
                                 pd.DataFrame(columns=CORRELATION_COLUMNS), metrics, tmp_path / "report.md",
                                 source_pairs=tables.source_pairs, sources=["A", "B", "C"],
                                 gold_prob=gold if with_gold else None).read_text()
    return text, gold


def test_the_report_sets_the_continuous_score_beside_accuracy(tmp_path):
    text, gold = write(tmp_path, report_records())
    assert text.index("\n## The answer\n") < text.index("\n## A continuous score beside accuracy\n") \
        < text.index("\n## Methods side by side\n" if "## Methods" in text else "\n## Definitions\n")
    section = text.split("\n## A continuous score beside accuracy\n")[1].split("\n## ")[0]
    assert "The headline numbers of this report stay accuracy-based retention" in section
    assert "Intervals rest on 2 seeds per set." in section
    lines = [[c.strip() for c in ln.split("|")[1:-1]] for ln in section.splitlines() if ln.startswith("|")]
    header, _, *rows = lines
    assert header == ["dimension", "task", "n", "rho (p)", "best by accuracy", "best by gold prob",
                      "accuracy half-width (points)", "gold-prob half-width (points)"]
    assert [r[1] for r in rows] == ["mc"]  # qa has no gold probabilities
    over = gold[gold["seed"].isna()]
    x, y = over["accuracy_retention"].to_numpy(), over["gold_prob_retention"].to_numpy()
    rho = stats.spearmanr(x, y).statistic
    p = exact_p(x, y)
    assert rows[0][2] == "3" and rows[0][3] == f"{rho:+.2f} (p={p:.3f})"
    assert rows[0][4] == over["calib"].iat[int(np.argmax(x))] and rows[0][5] == over["calib"].iat[int(np.argmax(y))]
    for cell, column in ((rows[0][6], "accuracy_retention"), (rows[0][7], "gold_prob_retention")):
        half = (over[f"{column}_high"] - over[f"{column}_low"]).to_numpy() / 2
        assert cell == f"{100 * np.median(half):.1f}"
    assert report.DEFINITIONS[-1] in text and "Gold-probability retention" in report.DEFINITIONS[-1]


def test_the_report_skips_the_section_with_one_line_without_a_multiple_choice_task(tmp_path):
    recs = report_records()
    for rec in recs:
        rec["items"] = rec["items"].drop(columns="gold_prob")
    text, gold = write(tmp_path, recs)
    assert gold.empty
    section = text.split("\n## A continuous score beside accuracy\n")[1].split("\n## ")[0]
    assert section.strip().startswith("Skipped: no multiple-choice task of the main block has gold-choice "
                                      "probabilities") and section.strip().count("\n") == 0
    assert write(tmp_path, report_records(), with_gold=False)[0].count("Skipped: no multiple-choice task") == 1
