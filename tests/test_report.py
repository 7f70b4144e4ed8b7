"""Tests of the report stage: calmix.analysis.retention, .intervals, .comparisons, .correlation, .plots
and .report.

Every expected number is built by hand from the synthetic scores below, never from the module.
"""

from __future__ import annotations

import json
import logging
import math
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import calmix.analysis.correlation as cr
import calmix.analysis.plots as pl
import calmix.analysis.retention as rt
from calmix.analysis import report
from calmix.analysis.comparisons import builder_comparisons, source_pairs
from calmix.analysis.intervals import Bootstrap, retention_with_intervals
from calmix.core.io import write_table
from calmix.core.stats import benjamini_hochberg, spearman

MODEL = "world"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Two dimensions; "general" has two tasks (one multiple choice with chance 0.25), "math" one.
DENSE = {"general": {"gen_mc": (0.80, 0.25), "gen_qa": (0.50, 0.0)}, "math": {"math_gsm": (0.40, 0.0)}}
METRIC = {"gen_mc": "acc,none", "gen_qa": "exact_match,none", "math_gsm": "exact_match,strict-match"}
SHOTS = {"gen_mc": 0, "gen_qa": 3, "math_gsm": 5}
# Pruned scores (gen_mc, gen_qa, math_gsm) per (calib, seed): general rises and math falls A -> D.
PRUNED = {
    ("A", 0): (0.40, 0.20, 0.36), ("A", 1): (0.44, 0.22, 0.30),
    ("B", 0): (0.50, 0.30, 0.28), ("B", 1): (0.52, 0.26, 0.32),
    ("C", 0): (0.60, 0.35, 0.20), ("C", 1): (0.58, 0.37, 0.22),
    ("D", 0): (0.70, 0.45, 0.10), ("D", 1): (0.72, 0.40, 0.12),
}
CALIBS = ["A", "B", "C", "D"]
PERPLEXITY = {("A", 0): 10, ("A", 1): 12, ("B", 0): 20, ("B", 1): 18,
              ("C", 0): 30, ("C", 1): 33, ("D", 0): 40, ("D", 1): 41}
NGRAM = {("A", 0): 0.3, ("A", 1): 0.1, ("B", 0): 0.2, ("B", 1): 0.2,
         ("C", 0): 0.5, ("C", 1): 0.4, ("D", 0): 0.1, ("D", 1): 0.3}


N_ITEMS = 100


def task_entry(task: str, score: float, chance: float) -> dict:
    return {"metric": METRIC[task], "num_fewshot": SHOTS[task], "score": score, "stderr": 0.01, "chance": chance, "n": N_ITEMS,
            "higher_is_better": True, "aggregation": "mean"}


def items_of(tasks: dict[str, float]) -> pd.DataFrame:
    """Per-item 0/1 scores whose mean is exactly each task's score (the first score*100 items right)."""
    rows = [{"task": t, "leaf": t, "doc_id": i, "score": float(i < round(score * N_ITEMS)), "weight": 1.0}
            for t, score in tasks.items() for i in range(N_ITEMS)]
    return pd.DataFrame(rows)


def make_records(dense_override: dict | None = None,
                 settings: tuple[tuple[str, str], ...] = (("sparsegpt", "0.6"),)) -> list[dict]:
    """Eval records as the evaluation stage writes them: the dense model's, then every calib and seed
    of each (method, target) in ``settings``, the target label under the record's key "sparsity"."""
    dense = {d: dict(t) for d, t in DENSE.items()}
    for (dim, task), value in (dense_override or {}).items():
        dense[dim][task] = value
    records = []
    for dim, tasks in dense.items():
        records.append({"model": MODEL, "method": "dense", "sparsity": "dense", "calib": None,
                        "seed": None, "dimension": dim, "settings": {}, "path": f"dense/{dim}.json",
                        "tasks": {t: task_entry(t, s, c) for t, (s, c) in tasks.items()},
                        "items": items_of({t: s for t, (s, _) in tasks.items()})})
    for method, target in settings:
        for (calib, seed), (mc, qa, gsm) in PRUNED.items():
            scores = {"gen_mc": mc, "gen_qa": qa, "math_gsm": gsm}
            for dim, tasks in dense.items():
                records.append({"model": MODEL, "method": method, "sparsity": target, "calib": calib,
                                "seed": seed, "dimension": dim, "settings": {},
                                "path": f"{method}/{target.replace(':', 'of')}/{calib}/seed{seed}/{dim}.json",
                                "tasks": {t: task_entry(t, scores[t], c) for t, (_, c) in tasks.items()},
                                "items": items_of({t: scores[t] for t in tasks})})
    return records


def make_metrics() -> pd.DataFrame:
    rows = [{"model": MODEL, "calib": c, "seed": s, "perplexity": float(PERPLEXITY[c, s]),
             "ngram4_aggregation": NGRAM[c, s], "constant": 1.0} for (c, s) in PRUNED]
    return pd.DataFrame(rows)


def hand_retention(calib: str, seed: int) -> dict[str, float]:
    """Dimension and total retention straight from the definitions."""
    mc, qa, gsm = PRUNED[calib, seed]
    general = (mc / 0.80 + qa / 0.50) / 2
    math_ = gsm / 0.40
    return {"general": general, "math": math_, "total": (general + math_) / 2}


def hand_adjusted(calib: str, seed: int) -> dict[str, float]:
    mc, qa, gsm = PRUNED[calib, seed]
    general = ((mc - 0.25) / (0.80 - 0.25) + qa / 0.50) / 2
    math_ = gsm / 0.40
    return {"general": general, "math": math_, "total": (general + math_) / 2}


@pytest.fixture
def retention() -> pd.DataFrame:
    return rt.retention_table(make_records())


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, ...]:
    return retention_with_intervals(make_records(), Bootstrap(resamples=500), pairs=source_pairs(CALIBS))


@pytest.fixture
def summary(tables) -> pd.DataFrame:
    return tables[1]


@pytest.fixture
def settings(tables) -> pd.DataFrame:
    return tables[2]


def value(table: pd.DataFrame, calib: str, seed: int, level: str, name: str,
          col: str = "retention") -> float:
    row = table[(table.calib == calib) & (table.seed == seed) & (table.level == level)
                & (table.name == name)]
    assert len(row) == 1
    return float(row[col].iloc[0])


# --- loading and retention ------------------------------------------------------------------------

def test_load_eval_records(tmp_path):
    paths = []
    want = [{k: v for k, v in rec.items() if k not in ("items", "path")} for rec in make_records()[:3]]
    for i, rec in enumerate(want):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps(rec))
        paths.append(p)
    loaded = rt.load_eval_records(paths)
    assert [{k: v for k, v in r.items() if k != "path"} for r in loaded] == want
    assert [r["path"] for r in loaded] == [str(p) for p in paths]
    assert rt.load_eval_records(str(paths[0]))[0]["tasks"] == want[0]["tasks"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": MODEL}))
    with pytest.raises(ValueError, match="bad.json"):
        rt.load_eval_records([bad])


def test_retention_columns_and_shape(retention):
    assert list(retention.columns) == rt.RETENTION_COLUMNS
    # per (calib, seed): 3 tasks + 2 dimensions + 1 total
    assert len(retention) == len(PRUNED) * 6
    assert set(retention.level) == {"task", "dimension", "total"}
    assert (retention.method == "sparsegpt").all() and (retention.target == "0.6").all()


def test_retention_hand_computed_values(retention):
    # calib A, seed 0: gen_mc 0.40/0.80, gen_qa 0.20/0.50, math 0.36/0.40
    assert value(retention, "A", 0, "task", "gen_mc") == pytest.approx(0.5)
    assert value(retention, "A", 0, "task", "gen_qa") == pytest.approx(0.4)
    assert value(retention, "A", 0, "task", "math_gsm") == pytest.approx(0.9)
    assert value(retention, "A", 0, "dimension", "general") == pytest.approx(0.45)
    assert value(retention, "A", 0, "dimension", "math") == pytest.approx(0.9)
    assert value(retention, "A", 0, "total", "total") == pytest.approx(0.675)
    # chance-adjusted: (0.40 - 0.25) / (0.80 - 0.25) = 0.272727...
    assert value(retention, "A", 0, "task", "gen_mc", "chance_adjusted") == pytest.approx(0.15 / 0.55)
    assert value(retention, "A", 0, "dimension", "general", "chance_adjusted") == pytest.approx(
        (0.15 / 0.55 + 0.4) / 2)
    assert value(retention, "A", 0, "total", "total", "chance_adjusted") == pytest.approx(
        ((0.15 / 0.55 + 0.4) / 2 + 0.9) / 2)
    row = retention[(retention.calib == "A") & (retention.seed == 0) & (retention.name == "gen_mc")]
    assert row.score.iloc[0] == 0.40 and row.dense_score.iloc[0] == 0.80
    assert row.chance.iloc[0] == 0.25 and row.dimension.iloc[0] == "general"
    assert row.metric.iloc[0] == "acc,none" and row.num_fewshot.iloc[0] == 0
    shots = retention[retention.level == "task"].groupby("name")["num_fewshot"].unique()
    assert {name: list(v) for name, v in shots.items()} == {t: [n] for t, n in SHOTS.items()}
    assert retention[retention.level != "task"]["num_fewshot"].isna().all()


def test_dimension_is_mean_of_tasks_and_total_mean_of_dimensions(retention):
    for calib, seed in PRUNED:
        want, want_adj = hand_retention(calib, seed), hand_adjusted(calib, seed)
        g = retention[(retention.calib == calib) & (retention.seed == seed)]
        for col in ("retention", "chance_adjusted"):
            tasks = g[g.level == "task"]
            dims = g[g.level == "dimension"].set_index("name")[col]
            for dim, part in tasks.groupby("dimension"):
                assert dims[dim] == pytest.approx(part[col].mean())
            total = g[g.level == "total"][col].iloc[0]
            assert total == pytest.approx(dims.mean())
        for name in ("general", "math"):
            assert value(retention, calib, seed, "dimension", name) == pytest.approx(want[name])
            assert value(retention, calib, seed, "dimension", name, "chance_adjusted") == \
                pytest.approx(want_adj[name])
        assert value(retention, calib, seed, "total", "total") == pytest.approx(want["total"])


def test_missing_dense_is_an_error():
    records = [r for r in make_records() if not (r["method"] == "dense" and r["dimension"] == "math")]
    with pytest.raises(ValueError, match=r"world.*math"):
        rt.retention_table(records)


def test_dense_zero_gives_nan_and_warning(caplog):
    records = make_records({("math", "math_gsm"): (0.0, 0.0)})
    with caplog.at_level(logging.WARNING, logger="calmix.analysis.retention"):
        table = rt.retention_table(records)
    assert math.isnan(value(table, "A", 0, "task", "math_gsm"))
    assert math.isnan(value(table, "A", 0, "dimension", "math"))
    assert math.isnan(value(table, "A", 0, "total", "total"))
    assert not np.isinf(table[["retention", "chance_adjusted"]].to_numpy()).any()
    assert value(table, "A", 0, "dimension", "general") == pytest.approx(0.45)
    assert "math_gsm" in caplog.text
    # warned once per (model, task, view), not once per pruned record
    assert sum("math_gsm" in r.getMessage() for r in caplog.records) == 2


def test_dense_at_chance_gives_nan_adjusted_only(caplog):
    records = make_records({("general", "gen_mc"): (0.25, 0.25)})
    with caplog.at_level(logging.WARNING, logger="calmix.analysis.retention"):
        table = rt.retention_table(records)
    assert math.isnan(value(table, "A", 0, "task", "gen_mc", "chance_adjusted"))
    assert value(table, "A", 0, "task", "gen_mc") == pytest.approx(0.40 / 0.25)
    assert "gen_mc" in caplog.text


def test_pruned_shots_other_than_the_dense_models_are_an_error():
    records = make_records()
    pruned = next(r for r in records if r["method"] != "dense" and r["dimension"] == "math")
    pruned["tasks"]["math_gsm"]["num_fewshot"] = 0  # the dense model's is 5
    with pytest.raises(ValueError, match="task 'math_gsm': pruned num_fewshot 0 differs from dense num_fewshot 5"):
        rt.retention_table(records)


def test_duplicate_record_is_an_error():
    records = make_records()
    with pytest.raises(ValueError, match="duplicate"):
        rt.retention_table(records + [records[-1]])


# --- correlations ---------------------------------------------------------------------------------

def hand_means(calibs=CALIBS):
    """Per-calib means over seeds of metrics and retention, computed by hand."""
    metric = {c: {"perplexity": np.mean([PERPLEXITY[c, s] for s in (0, 1)]),
                  "ngram4_aggregation": np.mean([NGRAM[c, s] for s in (0, 1)])} for c in calibs}
    ret = {c: {d: np.mean([hand_retention(c, s)[d] for s in (0, 1)])
               for d in ("general", "math", "total")} for c in calibs}
    return metric, ret


def test_correlation_matches_scipy_on_per_calib_means(retention):
    corr = cr.correlation_table(make_metrics(), retention)
    assert list(corr.columns) == cr.CORRELATION_COLUMNS
    assert list(pd.unique(corr.dimension)) == ["general", "math", "total"]
    assert list(pd.unique(corr.metric)) == ["perplexity", "ngram4_aggregation", "constant"]
    metric, ret = hand_means()
    for name in ("perplexity", "ngram4_aggregation"):
        for dim in ("general", "math", "total"):
            x, y = [metric[c][name] for c in CALIBS], [ret[c][dim] for c in CALIBS]
            want = stats.spearmanr(x, y)
            row = corr[(corr.metric == name) & (corr.dimension == dim)].iloc[0]
            assert row.rho == pytest.approx(want.statistic, nan_ok=True)
            # n = 4: the exact permutation p, not scipy's t approximation (which says p = 0 at |rho| = 1)
            assert row.p == pytest.approx(spearman(x, y)[1], nan_ok=True) and row.n == 4
            assert row.p_method == ("exact" if np.isfinite(row.rho) else "none")
            assert (row.model, row.method, row.target) == (MODEL, "sparsegpt", "0.6")
    pp = corr[corr.metric == "perplexity"].set_index("dimension")
    assert pp.rho["general"] == pytest.approx(1.0) and pp.rho["math"] == pytest.approx(-1.0)
    assert pp.p["general"] == pytest.approx(2 / 24)  # 2 of the 4! re-pairings reach |rho| = 1
    assert np.allclose(corr.q, benjamini_hochberg(corr.p), equal_nan=True)  # one group: one grid


def test_constant_metric_gives_nan_without_warnings(retention, recwarn):
    corr = cr.correlation_table(make_metrics(), retention)
    const = corr[corr.metric == "constant"]
    assert len(const) == 3 and const.rho.isna().all()
    assert not [w for w in recwarn if issubclass(w.category, stats.ConstantInputWarning)]


def test_correlation_restricted_to_calibs(retention):
    corr = cr.correlation_table(make_metrics(), retention, calibs=["A", "C", "D"])
    metric, ret = hand_means(["A", "C", "D"])
    want = stats.spearmanr([metric[c]["ngram4_aggregation"] for c in metric],
                           [ret[c]["total"] for c in metric])
    row = corr[(corr.metric == "ngram4_aggregation") & (corr.dimension == "total")].iloc[0]
    assert row.n == 3 and np.isfinite(row.rho)
    assert row.rho == pytest.approx(want.statistic)
    assert row.p == pytest.approx(want.pvalue)
    with pytest.raises(ValueError, match="Z"):
        cr.correlation_table(make_metrics(), retention, calibs=["A", "B", "Z"])


def test_chance_adjusted_correlation(retention):
    corr = cr.correlation_table(make_metrics(), retention, value="chance_adjusted")
    adj = {c: np.mean([hand_adjusted(c, s)["total"] for s in (0, 1)]) for c in CALIBS}
    ngram = {c: np.mean([NGRAM[c, s] for s in (0, 1)]) for c in CALIBS}
    want = stats.spearmanr([ngram[c] for c in CALIBS], [adj[c] for c in CALIBS])
    row = corr[(corr.metric == "ngram4_aggregation") & (corr.dimension == "total")].iloc[0]
    assert row.rho == pytest.approx(want.statistic)


def test_opposite_sign_pairs(retention):
    # Four sources cannot make anything significant (the smallest exact p is 2/24), so no pair.
    assert cr.opposite_sign_pairs(cr.correlation_table(make_metrics(), retention)).empty
    pairs = cr.opposite_sign_pairs(hand_corr())  # decided by q, not p
    assert list(pairs[["metric", "dim_pos", "dim_neg"]].itertuples(index=False, name=None)) == [
        ("perplexity", "general", "math"), ("perplexity", "general", "code")]
    assert cr.opposite_sign_pairs(hand_corr().assign(q=0.2)).empty


# --- output files ---------------------------------------------------------------------------------

def test_write_table_roundtrip(tmp_path, retention):
    csv, parquet = write_table(retention, tmp_path / "sub" / "retention_0.6")
    assert csv.name == "retention_0.6.csv" and parquet.name == "retention_0.6.parquet"
    back = pd.read_parquet(parquet)
    pd.testing.assert_frame_equal(back.reset_index(drop=True), retention, check_dtype=False)
    assert len(pd.read_csv(csv)) == len(retention)
    assert sorted(os.listdir(tmp_path / "sub")) == ["retention_0.6.csv", "retention_0.6.parquet"]


def test_plots_are_deterministic_pngs(tmp_path, retention, summary):
    corr = cr.correlation_table(make_metrics(), retention)
    for fn, data in ((pl.plot_rho_heatmap, corr), (pl.plot_retention, summary), (pl.plot_profile, summary)):
        a, b = tmp_path / f"{fn.__name__}_a.png", tmp_path / f"{fn.__name__}_b.png"
        fn(data, a)
        fn(data, b)
        assert a.read_bytes()[:8] == PNG_MAGIC
        assert a.stat().st_size > 1000
        assert a.read_bytes() == b.read_bytes()
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_scatter_one_png_per_setting(tmp_path, retention, summary):
    corr = cr.correlation_table(make_metrics(), retention)
    two = pd.concat([corr, corr.assign(target="0.5")], ignore_index=True)
    both = pd.concat([summary, summary.assign(target="0.5")], ignore_index=True)
    written = pl.plot_scatters(two, make_metrics(), both, tmp_path / "scatter", CALIBS)
    assert [p.name for p in written] == ["world_sparsegpt_0.6.png", "world_sparsegpt_0.5.png"]
    assert sorted(os.listdir(tmp_path / "scatter")) == sorted(p.name for p in written)
    first = written[0].read_bytes()
    assert first[:8] == PNG_MAGIC
    pl.plot_scatters(two, make_metrics(), both, tmp_path / "scatter", CALIBS)  # replaces the folder whole
    assert written[0].read_bytes() == first and len(os.listdir(tmp_path / "scatter")) == 2


def test_set_tables_carry_the_summary_intervals(summary):
    (key, table), = pl.set_tables(summary).items()
    assert key == (MODEL, "sparsegpt", "0.6")
    row = summary[(summary.calib == "D") & (summary.name == "general")].iloc[0]
    assert table.loc["D", ("mean", "general")] == pytest.approx(100 * row.retention)
    assert table.loc["D", ("low", "general")] == pytest.approx(100 * row.retention_low)
    assert table.loc["D", ("high", "general")] == pytest.approx(100 * row.retention_high)
    assert list(table.index) == list(table[("mean", "total")].sort_values(ascending=False).index)


def test_heatmap_several_panels(tmp_path, retention):
    corr = cr.correlation_table(make_metrics(), retention)
    other = corr.assign(target="0.5")
    path = pl.plot_rho_heatmap(pd.concat([corr, other], ignore_index=True), tmp_path / "h.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


# --- markdown -------------------------------------------------------------------------------------

def hand_corr() -> pd.DataFrame:
    rows = [("perplexity", "general", 0.71, 0.004, 0.016), ("perplexity", "math", -0.53, 0.03, 0.04),
            ("perplexity", "code", -0.59, 0.01, 0.027), ("perplexity", "total", 0.10, 0.5, 0.57),
            ("entropy", "general", 0.80, 0.01, 0.06), ("entropy", "math", 0.30, 0.4, 0.53),
            ("entropy", "code", -0.9, 0.2, 0.32), ("entropy", "total", 0.2, 0.6, 0.6)]
    corr = pd.DataFrame([{"model": MODEL, "method": "sparsegpt", "target": "0.6", "metric": m, "dimension": d,
                          "rho": r, "rho_low": r - 0.11, "rho_high": r + 0.09, "p": p, "p_method": "t", "q": q,
                          "n": 15} for m, d, r, p, q in rows])
    corr.loc[corr.metric == "entropy", ["rho_low", "rho_high"]] = np.nan  # e.g. one seed
    return corr


def cells_of(section: str, first: str) -> list[str]:
    line = next(ln for ln in section.splitlines() if ln.split("|")[1:2] and ln.split("|")[1].strip() == first)
    return [x.strip() for x in line.split("|")[1:-1]]


def test_markdown_contents(tmp_path, retention, summary, settings, tables):
    path = report.write_markdown(summary, settings, retention, hand_corr(), make_metrics(), tmp_path / "report.md",
                                 title="test report", notes=["built-in world"], source_pairs=tables.source_pairs)
    text = path.read_text()
    assert text.startswith("# test report\n\n## The answer\n")  # the answer first
    assert "- built-in world" in text
    for definition in report.DEFINITIONS:
        assert definition in text
    # dense scores, with the shots, metric and filter each task was scored with
    dense_section = text.split("## Dense scores")[1].split("##")[0]
    header, _, *lines = [[x.strip() for x in ln.split("|")[1:-1]] for ln in dense_section.splitlines() if ln.startswith("|")]
    assert header == ["model", "dimension", "task", "shots", "metric", "filter", "dense score", "chance"]
    assert lines == [[MODEL, "general", "gen_mc", "0", "acc", "none", "0.8", "0.250"],
                     [MODEL, "general", "gen_qa", "3", "exact_match", "none", "0.5", "0.000"],
                     [MODEL, "math", "math_gsm", "5", "exact_match", "strict-match", "0.4", "0.000"]]
    # retention (%): D has the highest total, A the lowest; order by total descending; every figure
    # carries its interval from the summary table
    totals = {c: 100 * np.mean([hand_retention(c, s)["total"] for s in (0, 1)]) for c in CALIBS}
    section = text.split("### Retention (%)")[1].split("###")[0]
    calib_lines = [ln for ln in section.splitlines() if ln.startswith("|") and ln.split("|")[1].strip() in CALIBS]
    order = [ln.split("|")[1].strip() for ln in calib_lines]
    assert order == sorted(CALIBS, key=lambda c: -totals[c])
    for c in CALIBS:
        row = summary[(summary.calib == c) & (summary.level == "total")].iloc[0]
        assert row.retention * 100 == pytest.approx(totals[c])
        cells = cells_of(section, c)
        assert cells[1] == "2"  # seeds
        assert cells[-1] == f"{totals[c]:.1f} [{100 * row.retention_low:.1f}, {100 * row.retention_high:.1f}]"
    # best / worst / their difference for general, in the answer
    gen = {c: 100 * np.mean([hand_retention(c, s)["general"] for s in (0, 1)]) for c in CALIBS}
    answer = text.split("## The answer")[1].split("\n## ")[0]
    cells = cells_of(answer, "general")
    assert cells[:2] == ["general", "D"] and cells[2].startswith(f"{gen['D']:.1f} [")
    assert cells[3] == "A" and cells[4].startswith(f"{gen['A']:.1f} [")
    assert cells[5].startswith(f"{gen['D'] - gen['A']:+.1f} [")
    # rho with its seed interval, p and q; no bracket where the interval is undefined
    assert "+0.71 [+0.60, +0.80] (p=0.004, q=0.016)" in text and "-0.53 [-0.64, -0.44] (p=0.030, q=0.040)" in text
    assert "+0.80 (p=0.010, q=0.060)" in text
    assert ("Opposite-sign pairs (q < 0.05): perplexity: general +0.71 (q=0.016) vs "
            "math -0.53 (q=0.040), code -0.59 (q=0.027).") in text
    assert "entropy:" not in text
    assert "n = 15" in text
    # OIT metric table: means over seeds
    assert "perplexity" in text and "ngram4_aggregation" in text
    assert "| 11 " in text or "| 11  " in text or " 11 |" in text   # A: mean(10, 12)
    # deterministic
    again = report.write_markdown(summary, settings, retention, hand_corr(), make_metrics(), tmp_path / "again.md",
                                  title="test report", notes=["built-in world"], source_pairs=tables.source_pairs)
    assert again.read_text() == text


def test_markdown_no_opposite_sign(tmp_path, retention, summary, settings):
    corr = hand_corr()
    corr = corr[corr.metric == "entropy"]
    text = report.write_markdown(summary, settings, retention, corr, make_metrics(), tmp_path / "r.md").read_text()
    assert "Opposite-sign pairs (q < 0.05): none." in text


def test_markdown_from_real_correlations(tmp_path, retention, summary, settings):
    corr = cr.correlation_table(make_metrics(), retention)
    text = report.write_markdown(summary, settings, retention, corr, make_metrics(), tmp_path / "r.md").read_text()
    assert "+1.00 [" in text and "(p=0.083, q=" in text and "Opposite-sign pairs (q < 0.05): none." in text
    assert "n/a" in text   # the constant metric


def test_markdown_methods_side_by_side(tmp_path, retention, summary, settings):
    text = report.write_markdown(summary, settings, retention, hand_corr(), make_metrics(), tmp_path / "r.md",
                                 baseline="B").read_text()
    section = text.split("## Methods side by side")[1].split("\n## ")[0]
    key = (MODEL, "sparsegpt", "0.6")
    total = pl.set_tables(summary)[key][("mean", "total")]
    over_sets = settings[settings.level == "total"].iloc[0]
    assert over_sets.retention * 100 == pytest.approx(total.mean())
    cells = cells_of(section, pl.group_title(key))  # the first row: the mean over the sets
    assert cells[1:3] == ["mean over 4 sets", "2 seeds"]
    low, high = 100 * over_sets.retention_low, 100 * over_sets.retention_high
    assert cells[-1] == f"{total.mean():.1f} [{low:.1f}, {high:.1f}]"
    on_b = next(line for line in section.splitlines() if "| B " in line)
    b = summary[(summary.calib == "B") & (summary.level == "total")].iloc[0]
    assert f"{100 * b.retention:.1f} [{100 * b.retention_low:.1f}, {100 * b.retention_high:.1f}]" in on_b


def test_built_sets_section_and_plot(tmp_path, retention):
    pairs = builder_comparisons(["A", "B", "C"], {"D": "mix"}, baseline="A")
    tables = retention_with_intervals(make_records(), Bootstrap(resamples=300), pairs)
    compared = tables.comparisons
    assert set(compared.comparison) == {"D vs best single source", "D vs A"}
    best = compared[compared.comparison == "D vs best single source"].versus.iat[0]
    totals = {c: np.mean([hand_retention(c, s)["total"] for s in (0, 1)]) for c in CALIBS}
    assert best == max(["A", "B", "C"], key=totals.get)
    row = compared[(compared.comparison == "D vs A") & (compared.level == "total")].iloc[0]
    assert row.difference == pytest.approx(totals["D"] - totals["A"])
    assert row.difference_low <= row.difference <= row.difference_high
    text = report.write_markdown(tables.over_seeds, tables.over_sets, tables.per_checkpoint,
                                 cr.correlation_table(make_metrics(), retention), make_metrics(),
                                 tmp_path / "r.md", comparisons=compared, sources=["A", "B", "C"]).read_text()
    section = text.split("#### Built sets")[1].split("\n## ")[0]
    cells = cells_of(section, "D vs A")
    assert cells[1:3] == ["A", "2 seeds"]
    assert cells[-1] == (f"{100 * row.difference:+.1f} [{100 * row.difference_low:+.1f}, "
                         f"{100 * row.difference_high:+.1f}]")
    a, b = pl.plot_comparisons(compared, tmp_path / "a.png"), pl.plot_comparisons(compared, tmp_path / "b.png")
    assert a.read_bytes()[:8] == PNG_MAGIC and a.read_bytes() == b.read_bytes()
    without = report.write_markdown(tables.over_seeds, tables.over_sets, tables.per_checkpoint,
                                    cr.correlation_table(make_metrics(), retention), make_metrics(), tmp_path / "n.md",
                                    sources=["A", "B", "C"]).read_text()
    assert "No built set was pruned with this setting." in without and "D vs A" not in without


def test_paper_figures_sit_beside_the_comparisons_they_belong_to(tmp_path):
    builders = {"m": "mix", "w": "mix", "i": "igsp", "s": "selfcal", "g": "sgs"}
    figure = lambda calib, versus, label: report.paper_difference(calib, versus, label, builders, "web")  # noqa: E731
    assert figure("m", "code", "m vs best single source") == 8.8
    assert figure("w", "web", "w vs web") == 18.8  # the baseline stands in for C4
    assert figure("i", "s", "i vs s") == 2.4 and figure("i", "g", "i vs g") == 4.8
    assert figure("i", "web", "i vs web") is None and figure("s", "code", "s vs best single source") is None
    pairs = builder_comparisons(["A", "B", "C"], {"D": "mix"}, baseline="A")
    tables = retention_with_intervals(make_records(), Bootstrap(resamples=50), pairs)
    table = report._comparison_table(tables.comparisons, {"D": "mix"}, "A").set_index("comparison")
    assert table[report.PAPER_COLUMN].to_dict() == {"D vs best single source": "+8.8", "D vs A": "+18.8"}
    paper = report.paper_figures(tables.comparisons, {"D": "mix"}, "A")
    assert paper == {"D vs best single source": 8.8, "D vs A": 18.8}
    marked, plain = (pl.plot_comparisons(tables.comparisons, tmp_path / name, figures)
                     for name, figures in (("marked.png", paper), ("plain.png", None)))
    assert marked.read_bytes()[:8] == PNG_MAGIC and marked.read_bytes() != plain.read_bytes()


# --- pruning targets and method labels ------------------------------------------------------------

def test_titles_and_slugs_of_targets_and_method_labels():
    assert pl.group_title((MODEL, "wanda", "0.6")) == "world · wanda · 60% unstructured"
    assert pl.group_title((MODEL, "wanda", "2:4")) == "world · wanda · 2:4 semi-structured"
    assert pl.group_title((MODEL, "wanda-owl", "4:8")) == "world · wanda-owl · 4:8 semi-structured"
    assert pl.group_slug((MODEL, "wanda", "0.6")) == "world_wanda_0.6"
    assert pl.group_slug((MODEL, "wanda", "2:4")) == "world_wanda_2of4"
    assert pl.group_slug((MODEL, "wanda-owl", "4:8")) == "world_wanda-owl_4of8"
    keys = [(MODEL, m, t) for m in ("wanda", "wanda-owl") for t in ("0.6", "0.5", "2:4", "4:8")]
    assert len({pl.group_slug(k) for k in keys}) == len({pl.group_title(k) for k in keys}) == len(keys)


def report_stage(tmp_path, settings: tuple[tuple[str, str], ...]) -> tuple[list, str]:
    """The retention, correlations and report rules on records of several settings, the report read
    from the tables' Parquet files as the workflow does: (scatter files, report text)."""
    tables_dir = tmp_path / "tables"
    records = make_records(settings=settings)
    pairs = builder_comparisons(["A", "B", "C"], {"D": "mix"}, baseline="A")
    names = ["retention", "summary", "settings", "comparisons", "source_pairs"]
    for name, frame in zip(names, retention_with_intervals(records, Bootstrap(resamples=100), pairs,
                                                           source_pairs(["A", "B", "C"]))):
        write_table(frame, tables_dir / name)
    write_table(make_metrics(), tables_dir / "metrics")
    t = {name: pd.read_parquet(tables_dir / f"{name}.parquet") for name in [*names, "metrics"]}
    write_table(cr.correlation_table(t["metrics"], t["retention"], calibs=["A", "B", "C"]), tables_dir / "corr")
    corr = pd.read_parquet(tables_dir / "corr.parquet")
    assert pl.plot_rho_heatmap(corr, tmp_path / "heatmap.png").read_bytes()[:8] == PNG_MAGIC
    assert pl.plot_retention(t["summary"], tmp_path / "retention.png").read_bytes()[:8] == PNG_MAGIC
    assert pl.plot_profile(t["summary"], tmp_path / "profile.png").read_bytes()[:8] == PNG_MAGIC
    paper = report.paper_figures(t["comparisons"], {"D": "mix"}, "A")
    assert pl.plot_comparisons(t["comparisons"], tmp_path / "builders.png", paper).read_bytes()[:8] == PNG_MAGIC
    written = pl.plot_scatters(corr, t["metrics"], t["summary"], tmp_path / "scatter", ["A", "B", "C"])
    text = report.write_markdown(t["summary"], t["settings"], t["retention"], corr, t["metrics"],
                                 tmp_path / "report.md", comparisons=t["comparisons"], source_pairs=t["source_pairs"],
                                 sources=["A", "B", "C"], builders={"D": "mix"}, baseline="A").read_text()
    return written, text


def test_plots_and_report_for_unstructured_and_n_m_targets(tmp_path):
    settings = (("sparsegpt", "0.6"), ("sparsegpt", "2:4"), ("sparsegpt", "4:8"))
    written, text = report_stage(tmp_path, settings)
    assert [p.name for p in written] == ["world_sparsegpt_0.6.png", "world_sparsegpt_2of4.png",
                                         "world_sparsegpt_4of8.png"]
    assert sorted(os.listdir(tmp_path / "scatter")) == sorted(p.name for p in written)
    assert len({p.read_bytes() for p in written}) == 3  # one figure per target, each titled with it
    titles = ["world · sparsegpt · 60% unstructured", "world · sparsegpt · 2:4 semi-structured",
              "world · sparsegpt · 4:8 semi-structured"]
    glance = text.split("## Methods side by side")[1].split("\n## ")[0]
    for title in titles:
        assert f"\n### {title}\n" in text  # the answer per target
        assert f"\n## {title}\n" in text  # retention of every set per target
        assert title in glance
    assert "sparsity" not in pd.read_parquet(tmp_path / "tables" / "summary.parquet").columns


def test_a_method_with_a_sparsity_profile_is_a_setting_of_its_own(tmp_path):
    written, text = report_stage(tmp_path, (("wanda", "2:4"), ("wanda-owl", "2:4")))
    assert [p.name for p in written] == ["world_wanda_2of4.png", "world_wanda-owl_2of4.png"]
    assert "\n## world · wanda · 2:4 semi-structured\n" in text
    assert "\n## world · wanda-owl · 2:4 semi-structured\n" in text


# --- what the figures draw, and a study without correlations ------------------------------------

def test_scatter_draws_the_single_sources_only(retention, summary):
    """D is in the summary and the metric table (a built set, say), but rho is over A, B and C: each
    panel has their three points, at their metric means over seeds and retention means."""
    sources = ["A", "B", "C"]
    corr = cr.correlation_table(make_metrics(), retention, calibs=sources)
    key = (MODEL, "sparsegpt", "0.6")
    fig = pl.scatter_figure(key, corr, make_metrics(), summary, sources)
    metric, ret = hand_means(sources)
    names, dims = list(pd.unique(corr.metric)), list(pd.unique(corr.dimension))
    axes = fig.axes
    assert len(axes) == len(names) * len(dims)
    for i, name in enumerate(names):
        for j, dim in enumerate(dims):
            (container,) = axes[i * len(dims) + j].containers  # one errorbar per panel
            x, y = (np.asarray(v, float) for v in container.lines[0].get_data())
            assert len(x) == len(sources)
            if name in ("perplexity", "ngram4_aggregation"):
                want = np.array(sorted((metric[c][name], 100 * ret[c][dim]) for c in sources))
                assert np.array(sorted(zip(x, y))) == pytest.approx(want)
    assert fig._suptitle.get_text().endswith(": 3 single sources, intervals over 2 seeds")


def test_a_magnitude_only_study_gets_a_complete_report(tmp_path):
    """One data-free setting, calibrated on none: no main block, no pairs, no correlations; every
    figure is still drawn and the report says why there is nothing to rank."""
    records = [r for r in make_records(settings=(("magnitude", "0.6"),)) if r["calib"] in (None, "A")]
    records = [{**r, "calib": "none"} if r["method"] == "magnitude" else r for r in records]
    records = [r for r in records if r["seed"] in (None, 0)]
    sources, swept = ["A", "B", "C"], {("magnitude", "0.6")}
    tables = retention_with_intervals(records, Bootstrap(resamples=50), builder_comparisons(sources, {}, "A"),
                                      source_pairs(sources, swept))
    assert tables.comparisons.empty and tables.source_pairs.empty
    corr = cr.correlation_table(make_metrics(), tables.per_checkpoint, calibs=sources, settings=swept)
    assert corr.empty
    why = report.no_correlations(tables.over_seeds, sources, swept)
    assert why.startswith("No correlations: no setting was pruned with the study's single sources")
    assert pl.plot_rho_heatmap(corr, tmp_path / "h.png", why_none=why).read_bytes()[:8] == PNG_MAGIC
    assert pl.plot_scatters(corr, make_metrics(), tables.over_seeds, tmp_path / "scatter", sources) == []
    assert os.listdir(tmp_path / "scatter") == []
    for draw in (pl.plot_retention, pl.plot_profile):
        assert draw(tables.over_seeds, tmp_path / f"{draw.__name__}.png").read_bytes()[:8] == PNG_MAGIC
    rows = pl.methods_rows(tables.over_seeds, tables.over_sets, [], "A")
    assert list(pd.unique(rows.calib)) == ["none"]
    assert pl.plot_methods(rows, tmp_path / "methods.png").read_bytes()[:8] == PNG_MAGIC
    text = report.write_markdown(tables.over_seeds, tables.over_sets, tables.per_checkpoint, corr, make_metrics(),
                                 tmp_path / "r.md", comparisons=tables.comparisons, source_pairs=tables.source_pairs,
                                 sources=sources, swept=swept, builders={}, baseline="A").read_text()
    answer = text.split("## The answer\n")[1].split("\n## ")[0]
    assert "This study has no main block" in answer and "no correlation" in answer
    for heading in ("## Methods side by side", "## Definitions", "## Dense scores",
                    "## OIT metrics of the calibration sets"):
        assert f"\n{heading}\n" in text
    assert "world · magnitude · 60% unstructured | none" in text
