"""calmix-plan's interval prediction (calmix.analysis.power.predict_intervals) against the bootstrap it predicts:
per-item data simulated with a known structure, written where a study writes it, and the report's own
two-stage percentile bootstrap (calmix.analysis.intervals.retention_with_intervals) run on the same
records as the oracle. The prediction is a normal approximation of that bootstrap, so it must land
within 15% of its half-width (the bootstrap's own Monte Carlo error at 4,000 resamples is ~2%)."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pandas as pd
import pytest

from calmix.analysis.intervals import Bootstrap, retention_with_intervals
from calmix.analysis.power import Assumptions, intervals_report, measured_half_widths, planned_items, predict_intervals
from calmix.evaluation.items import write_items
from conftest import REPO

MODEL, METHOD, TARGET = "m", "sparsegpt", "0.5"
TOLERANCE = 0.15


def binary_pair(rng: np.random.Generator, n: int, dense: float, retention: float, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """0/1 dense and pruned item scores: dense mean `dense`, pruned mean dense x retention, correlation rho."""
    pruned = dense * retention
    both = dense * pruned + rho * math.sqrt(dense * (1 - dense) * pruned * (1 - pruned))
    d = rng.random(n) < dense
    p = np.where(d, rng.random(n) < both / dense, rng.random(n) < (pruned - both) / (1 - dense))
    return d.astype(float), p.astype(float)


def documents(rng: np.random.Generator, n: int, nll: float, sd: float, cv: float, retention: float, rho: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dense log-likelihood, pruned log-likelihood, words) of n documents: dense per-word NLL normal
    (nll, sd), the pruned one k x larger in mean and spread (k giving the retention), correlation rho,
    word counts gamma with mean 300 and coefficient of variation cv."""
    k = (nll - math.log(retention)) / nll
    z1, z2 = rng.standard_normal(n), rng.standard_normal(n)
    x = nll + sd * z1
    y = k * nll + k * sd * (rho * z1 + math.sqrt(1 - rho ** 2) * z2)
    words = rng.gamma(1 / cv ** 2, 300 * cv ** 2, n)
    return -x * words, -y * words, words


def write(root, dimension: str, tasks: dict[str, dict], *, method: str = "dense", calib: str = "web",
          seed: int = 0) -> dict:
    """An eval record and its items where the workflow writes them under root, and the record as
    calmix.analysis.retention.load_eval_records(items=True) returns it. tasks[name]: "scores", and for
    perplexity "weights"."""
    entries, frames = {}, []
    for name, spec in tasks.items():
        scores = np.asarray(spec["scores"], float)
        weights = np.asarray(spec.get("weights", np.ones(len(scores))), float)
        ppl = "weights" in spec
        entries[name] = {"metric": "word_perplexity,none" if ppl else "acc,none", "num_fewshot": 0,
                         "score": math.exp(-scores.sum() / weights.sum()) if ppl else float(scores.mean()),
                         "chance": None if ppl else 0.25, "higher_is_better": not ppl,
                         "aggregation": "perplexity" if ppl else "mean"}
        frames.append(pd.DataFrame({"task": name, "leaf": name, "doc_id": np.arange(len(scores)), "score": scores,
                                    "weight": weights}))
    folder = root / "eval" / MODEL / ("dense" if method == "dense" else f"{method}/{TARGET}/{calib}/seed{seed}")
    folder.mkdir(parents=True, exist_ok=True)
    rec = {"model": MODEL, "method": method, "sparsity": "dense" if method == "dense" else TARGET,
           "calib": None if method == "dense" else calib, "seed": None if method == "dense" else seed,
           "dimension": dimension, "settings": {"limit": None}, "tasks": entries}
    (folder / f"{dimension}.json").write_text(json.dumps(rec))
    items = pd.concat(frames, ignore_index=True)
    write_items(items.to_dict("records"), folder / f"{dimension}.items.parquet")
    return {**rec, "path": str(folder / f"{dimension}.json"), "items": items}


def config(dimensions: dict[str, list[str]], limit: int | None = None) -> dict:
    return {"evaluation": {"limit": limit, "dimensions": {d: {"tasks": t} for d, t in dimensions.items()}},
            "report": {"bootstrap": {"confidence": 0.95}}, "world": {"eval_items": 200}}


def oracle(records: list[dict]) -> dict[tuple[str, str], float]:
    """{(level, name): half-width} of the report's two-stage bootstrap, for the one calibration set."""
    summary = retention_with_intervals(records, Bootstrap(resamples=4000)).over_seeds
    return {(r.level, r.name): (r.retention_high - r.retention_low) / 2 for r in summary.itertuples()}


def assert_close(predicted, measured: dict[tuple[str, str], float]) -> None:
    for row in predicted:
        want = measured[(row.level, row.name)]
        assert row.half_width == pytest.approx(want, rel=TOLERANCE), (row, want)


def test_one_seed_matches_the_item_bootstrap_of_mean_and_perplexity_tasks(tmp_path):
    """Observed dense and pruned items, one seed: the delta method's variance of each paired ratio,
    the dimension and total as means of independent tasks."""
    rng = np.random.default_rng(1)
    d1, p1 = binary_pair(rng, 300, 0.6, 0.8, 0.5)
    d2, p2 = binary_pair(rng, 200, 0.4, 0.7, 0.3)
    ll_d, ll_p, words = documents(rng, 150, 3.0, 0.5, 0.7, 0.6, 0.9)
    records = [
        write(tmp_path, "general", {"acc": {"scores": d1}, "ppl": {"scores": ll_d, "weights": words}}),
        write(tmp_path, "general", {"acc": {"scores": p1}, "ppl": {"scores": ll_p, "weights": words}}, method=METHOD),
        write(tmp_path, "math", {"acc2": {"scores": d2}}),
        write(tmp_path, "math", {"acc2": {"scores": p2}}, method=METHOD),
    ]
    rows, notes = predict_intervals(config({"general": ["acc", "ppl"], "math": ["acc2"]}), MODEL, METHOD, TARGET, 1,
                                    root=tmp_path)
    assert notes == [] and {r.basis for r in rows} == {"dense+pruned items"}
    assert [(r.level, r.name, r.items) for r in rows] == [
        ("dimension", "general", 450), ("task", "acc", 300), ("task", "ppl", 150), ("dimension", "math", 200),
        ("task", "acc2", 200), ("total", "total", 650)]
    assert rows[1].retention == pytest.approx(p1.mean() / d1.mean())
    assert rows[2].retention == pytest.approx(math.exp((ll_p - ll_d).sum() / words.sum()))
    assert_close(rows, oracle(records))


@pytest.mark.parametrize("retentions, shared", [([0.6, 0.75, 0.9], 1 / 3), ([0.75] * 4, 0.0)],
                         ids=["seeds differ", "items differ"])
def test_seeds_add_their_spread_and_share_the_item_noise(tmp_path, retentions, shared):
    """Three or four seeds of one set, each pruned model its own: the two-stage bootstrap draws the seeds with
    replacement at one item draw, so the seeds' spread adds (s^2 (k - 1) / k^2) and the item noise
    shrinks only where seeds differ on an item. Each case moves the prediction by more than the
    tolerance when that part is left out (seeds differ: the spread; items differ: the shrinking)."""
    rng = np.random.default_rng(2)
    d, common = binary_pair(rng, 600, 0.6, 0.75, 0.6)
    records = [write(tmp_path, "general", {"acc": {"scores": d}})]
    for seed, ret in enumerate(retentions):
        _, own = binary_pair(rng, 600, 0.6, ret, 0.0)
        p = np.where(rng.random(600) < shared, common, own)
        records.append(write(tmp_path, "general", {"acc": {"scores": p}}, method=METHOD, seed=seed))
    rows, _ = predict_intervals(config({"general": ["acc"]}), MODEL, METHOD, TARGET, len(retentions), root=tmp_path)
    assert {r.basis for r in rows} == {"dense+pruned items"}
    assert_close(rows, oracle(records))


@pytest.mark.parametrize("dense_items", [True, False], ids=["dense items", "no items"])
def test_assumptions_match_the_bootstrap_of_data_drawn_from_them(tmp_path, monkeypatch, dense_items):
    """Data simulated as the assumptions say (pruned scores at the assumed retention and correlations,
    the dense ones at the assumed accuracy and perplexity), predicted from the dense items alone or
    from nothing but the item counts, against the bootstrap of the simulated dense and pruned items."""
    monkeypatch.setattr("calmix.evaluation.tasks.heldout_text_tasks", lambda tasks: [t for t in tasks if t == "ppl"])
    a = Assumptions(retention=0.75, item_correlation=0.5, doc_correlation=0.8, dense_accuracy=0.6,
                    dense_perplexity=math.exp(3.0), doc_nll_sd=0.6, doc_words_cv=0.5)
    rng = np.random.default_rng(3)
    d, p = binary_pair(rng, 1000, a.dense_accuracy, a.retention, a.item_correlation)
    ll_d, ll_p, words = documents(rng, 1000, 3.0, a.doc_nll_sd, a.doc_words_cv, a.retention, a.doc_correlation)
    results = tmp_path / "results"
    records = [write(results, "general", {"acc": {"scores": d}, "ppl": {"scores": ll_d, "weights": words}}),
               write(results, "general", {"acc": {"scores": p}, "ppl": {"scores": ll_p, "weights": words}},
                     method=METHOD)]
    root = results if dense_items else tmp_path / "nothing"  # no pruned items of wanda either way
    rows, notes = predict_intervals(config({"general": ["acc", "ppl"]}, limit=1000), MODEL, "wanda", TARGET, 1, a, root)
    assert {r.basis for r in rows} == {"dense items + assumptions" if dense_items else "assumptions"}
    assert len(notes) == (0 if dense_items else 2)  # the counts are the limit's: no items to count
    assert_close(rows, oracle(records))


def test_assumed_seed_spread_is_the_two_stage_bootstrap_of_seeds():
    """Seeds alone (one item, so no item noise): k seeds with SD s drawn with replacement, averaged,
    vary by s^2 (k - 1) / k^2 on average; a direct simulation of that draw says the same."""
    from calmix.analysis.power import seed_variance

    rng = np.random.default_rng(5)
    k, s = 3, 0.05
    seeds = rng.normal(0, s, (20000, k))
    picks = rng.integers(0, k, (20000, k))
    draws = np.take_along_axis(seeds, picks, axis=1).mean(axis=1) - seeds.mean(axis=1)
    assert seed_variance(s ** 2, k) == pytest.approx(draws.var(), rel=0.05)
    assert seed_variance(s ** 2, 1) == 0


def test_item_counts_follow_the_limits_and_the_items_there(tmp_path):
    cfg = {"evaluation": {"limit": 50, "dimensions": {
        "general": {"tasks": ["mmlu", "hellaswag", "world_general", "mine", "arithmetic_1da_local"],
                    "task_limits": {"hellaswag": 7}},
        "code": {"tasks": ["humaneval"], "limit": None}}}, "world": {"eval_items": 30}}
    (tmp_path / "eval" / "items").mkdir(parents=True)
    (tmp_path / "eval" / "items" / "mine.jsonl").write_text('{"a": 1}\n{"a": 2}\n\n')
    count = {t: planned_items(cfg, "general", t, root=tmp_path) for t in cfg["evaluation"]["dimensions"]["general"]["tasks"]}
    assert count == {"mmlu": (57 * 50, None), "hellaswag": (7, None), "world_general": (30, None), "mine": (2, None),
                     "arithmetic_1da_local": (50, None)}
    assert planned_items(cfg, "code", "humaneval", root=tmp_path) == (164, None)  # limit null: all, whatever evaluation.limit says
    assert planned_items(cfg, "general", "unknown_task", root=tmp_path)[0] == 50
    dense = {"record": {"settings": {"limit": 50}},
             "items": pd.DataFrame({"task": "unknown_task", "leaf": "unknown_task", "doc_id": range(12)})}
    assert planned_items(cfg, "general", "unknown_task", dense, tmp_path) == (12, None)  # evaluated at this limit
    dense["record"]["settings"] = {"limit": None, "task_limits": {"unknown_task": 5}}
    assert planned_items(cfg, "general", "unknown_task", dense, tmp_path)[1]  # other limit then: a guess


def test_measured_half_widths_are_printed_beside_the_prediction(tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    base = {"model": MODEL, "method": METHOD, "target": TARGET, "seeds": 2, "retention": 0.8}
    pd.DataFrame([
        {**base, "calib": "web", "level": "dimension", "name": "general", "retention_low": 0.7, "retention_high": 0.9},
        {**base, "calib": "wiki", "level": "dimension", "name": "general", "retention_low": 0.6, "retention_high": 0.9},
        {**base, "calib": "web", "level": "total", "name": "total", "retention_low": 0.75, "retention_high": 0.85},
        {**base, "calib": "web", "level": "task", "name": "acc", "retention_low": 0.0, "retention_high": 1.0},
    ]).to_parquet(tables / "retention_summary.parquet")
    measured = measured_half_widths(tables / "retention_summary.parquet")
    assert measured["half_width"].tolist() == pytest.approx([0.1, 0.15, 0.05])
    cfg = {**config({"general": ["acc"]}, limit=100), "models": {MODEL: {}},
           "pruning": {"methods": [METHOD], "profiles": ["uniform"], "sparsities": [0.5], "structures": ["unstructured"]},
           "calibration": {"seeds": [0, 1]}}
    report = intervals_report(cfg, root=tmp_path)
    assert "measured ± (sets: min-max)" in report
    assert "12.5 (2: 10.0-15.0)" in report.split("\n  general")[1].splitlines()[0]
    assert "5.0 (1: 5.0-5.0)" in report.split("\n  total")[1]
    assert "--retention 0.8 --item-correlation 0.5" in report


def test_the_real_model_study_prints_its_prediction(tmp_path):
    """calmix-plan --intervals on the SmolLM2 study (no results here): every dimension and task, its
    items from the config's limits, the assumptions it took."""
    out = subprocess.run([str(REPO / ".venv" / "bin" / "calmix-plan"), "--configfile",
                          str(REPO / "experiments" / "smollm2-135m.yaml"), "--intervals", "--retention", "0.5"],
                         cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "model smollm2_135m, sparsegpt 0.5, 2 seeds, 95% percentile bootstrap" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if not line.startswith("  note")}
    assert rows["commonsense"][1:3] == ["1", "50"] and rows["piqa_local"][1] == "50" and rows["total"][1:3] == ["7", "205"]
    assert rows["heldout_code"][1:4] == ["3", "50.0%", "18.0"] and rows["heldout_code"][4] == "assumptions"
    assert "--retention 0.5 " in out
