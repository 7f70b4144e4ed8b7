"""Tests of what the report says first (calmix.analysis.report): the answer for the main block, the
methods side by side, the seeds behind every interval and the perplexity label, on tables built
here with known answers.

The tables are constructed from numpy draws (one array of resampled retentions per calibration set
and dimension); every expected best, worst, separation and share is recomputed from those draws with
numpy, never read from the module.
"""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pandas as pd
import pytest

import calmix.analysis.plots as pl
from calmix.analysis import report
from calmix.analysis.comparisons import COMPARISON_COLUMNS, SETTING_COLUMNS, separated_pairs
from calmix.analysis.correlation import CORRELATION_COLUMNS
from calmix.analysis.intervals import SUMMARY_COLUMNS

MODEL = "world"
MAIN = (MODEL, "sparsegpt", "0.6")
GRID = (MODEL, "wanda", "2:4")  # a pruning.compare setting, on A only
FREE = (MODEL, "magnitude", "0.6")  # data-free, on none
SWEPT = {("sparsegpt", "0.6"), ("magnitude", "0.6")}
SOURCES = ["A", "B", "C", "D"]
DIMS = ["general", "math"]
# general: A and B close at the top, C and D far below; math: all four within noise of each other.
MEANS = {"general": {"A": 0.80, "B": 0.79, "C": 0.60, "D": 0.50},
         "math": {"A": 0.50, "B": 0.52, "C": 0.49, "D": 0.505}}
SD = {"general": 0.01, "math": 0.05}
RESAMPLES = 4000


def make_draws(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """draws[calib][name]: resampled retention (fractions) of each single source, total = mean of dims."""
    rng = np.random.default_rng(seed)
    draws = {c: {d: rng.normal(MEANS[d][c], SD[d], RESAMPLES) for d in DIMS} for c in SOURCES}
    for c in SOURCES:
        draws[c]["total"] = np.mean([draws[c][d] for d in DIMS], axis=0)
    return draws


def summary_rows(key: tuple, calib: str, draws: dict[str, np.ndarray], seeds: int) -> list[dict]:
    rows = []
    for name, d in draws.items():
        low, high = np.percentile(d, [2.5, 97.5])
        value = {"retention": d.mean(), "retention_sd": np.nan, "retention_low": low, "retention_high": high}
        rows.append({**dict(zip(["model", "method", "target"], key)), "calib": calib,
                     "level": "total" if name == "total" else "dimension", "name": name,
                     "dimension": name, "seeds": seeds, **value,
                     **{k.replace("retention", "chance_adjusted"): v for k, v in value.items()}})
    return rows


def constructed(seeds: int = 2, perplexity: bool = False, sources: list[str] = SOURCES) -> dict[str, pd.DataFrame]:
    """Every table write_markdown reads, for the main block (``sources`` on MAIN), a grid setting and a
    data-free one; the source-pairs table from the draws (a minus b, a before b in SOURCES)."""
    draws = make_draws()
    other = {name: d * 0.9 for name, d in draws["A"].items()}
    rows = [r for c in sources for r in summary_rows(MAIN, c, draws[c], seeds)]
    rows += summary_rows(GRID, "A", other, 1) + summary_rows(FREE, "none", other, 1)
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    settings = []
    for key, g in summary.groupby(["model", "method", "target", "level", "name"], sort=False):
        settings.append({**dict(zip(["model", "method", "target", "level", "name"], key)), "dimension": key[-1],
                         "sets": len(g), **{c: g[c].mean() for c in SETTING_COLUMNS[7:]}})
    pairs = []
    for a, b in itertools.combinations(sources, 2):
        for name in [*DIMS, "total"]:
            diff = draws[a][name] - draws[b][name]
            low, high = np.percentile(diff, [2.5, 97.5])
            pairs.append({**dict(zip(["model", "method", "target"], MAIN)), "comparison": f"{a} vs {b}", "calib": a,
                          "versus": b, "level": "total" if name == "total" else "dimension", "name": name,
                          "dimension": name, "seeds": seeds, "versus_seeds": seeds,
                          "difference": draws[a][name].mean() - draws[b][name].mean(),
                          "difference_low": low, "difference_high": high,
                          "chance_adjusted_difference": np.nan, "chance_adjusted_difference_low": np.nan,
                          "chance_adjusted_difference_high": np.nan})
    metric = {"general": "word_perplexity,none" if perplexity else "acc,none", "math": "exact_match,none"}
    retention = pd.DataFrame([{"model": MODEL, "method": "sparsegpt", "target": "0.6", "calib": "A", "seed": 0,
                               "level": "task", "name": f"{d}_task", "dimension": d, "metric": metric[d],
                               "num_fewshot": 0, "score": 0.4, "dense_score": 0.5, "chance": np.nan,
                               "retention": 0.8, "chance_adjusted": 0.8} for d in DIMS])
    metrics = pd.DataFrame([{"model": MODEL, "calib": c, "seed": 0, "perplexity": float(i)}
                            for i, c in enumerate(sources)])
    return {"summary": summary, "settings": pd.DataFrame(settings, columns=SETTING_COLUMNS), "retention": retention,
            "corr": pd.DataFrame(columns=CORRELATION_COLUMNS), "metrics": metrics,
            "pairs": pd.DataFrame(pairs, columns=COMPARISON_COLUMNS), "draws": draws}


def write(tmp_path, t: dict, **kwargs) -> str:
    return report.write_markdown(t["summary"], t["settings"], t["retention"], t["corr"], t["metrics"],
                                 tmp_path / "report.md", source_pairs=t["pairs"], sources=SOURCES, swept=SWEPT,
                                 baseline="A", **kwargs).read_text()


def table_rows(section: str) -> list[list[str]]:
    """The cells of every Markdown table row of a section, header and rule lines left out."""
    rows = [[x.strip() for x in ln.split("|")[1:-1]] for ln in section.splitlines() if ln.startswith("|")]
    return [r for r in rows if not set("".join(r)) <= set(":-")]


def section(text: str, heading: str) -> str:
    """From the line ``heading`` to the next second-level heading."""
    return text.split(f"\n{heading}\n")[1].split("\n## ")[0]


def excludes_zero(d: np.ndarray) -> bool:
    low, high = np.percentile(d, [2.5, 97.5])
    return not low <= 0 <= high


def oracle(draws: dict, name: str) -> dict:
    """Best, worst, their separation, the sources indistinguishable from the best and the pairs that
    separate, straight from the draws."""
    means = {c: draws[c][name].mean() for c in SOURCES}
    ranked = sorted(SOURCES, key=lambda c: -means[c])
    best, worst = ranked[0], ranked[-1]
    return {"best": best, "worst": worst, "separate": excludes_zero(draws[best][name] - draws[worst][name]),
            "alike": [c for c in ranked[1:] if not excludes_zero(draws[best][name] - draws[c][name])],
            "separated": sum(excludes_zero(draws[a][name] - draws[b][name])
                             for a, b in itertools.combinations(SOURCES, 2))}


def test_the_answer_names_best_worst_and_whether_they_separate(tmp_path):
    t = constructed()
    text = write(tmp_path, t)
    assert text.startswith("# calmix report\n\n## The answer\n")
    answer = section(text, "## The answer")
    header, *rows = table_rows(answer)
    assert header == ["dimension", "best", "best (%)", "worst", "worst (%)", "best - worst (points)", "separate",
                      "indistinguishable from best", "pairs separated", "seeds (best / worst)"]
    by_dim = {r[0]: r for r in rows}
    assert list(by_dim) == ["general", "math", "total"]
    # the designed answers: general A over D, told apart, B within noise of A; math: nothing separates
    assert by_dim["general"][1] == "A" and by_dim["general"][3] == "D" and by_dim["general"][6] == "yes"
    assert by_dim["general"][7] == "B" and by_dim["general"][8] == "5/6 (83%)"
    assert by_dim["math"][6] == "no" and by_dim["math"][8] == "0/6 (0%)"
    for name, row in by_dim.items():
        want = oracle(t["draws"], name)
        assert row[1] == want["best"] and row[3] == want["worst"]
        assert row[6] == ("yes" if want["separate"] else "no")
        assert row[7] == (", ".join(want["alike"]) or "none")
        assert row[8].split()[0] == f"{want['separated']}/6"
        best, worst = (t["draws"][c][name] for c in (want["best"], want["worst"]))
        low, high = np.percentile(best, [2.5, 97.5])
        assert row[2] == f"{100 * best.mean():.1f} [{100 * low:.1f}, {100 * high:.1f}]"
        low, high = np.percentile(best - worst, [2.5, 97.5])
        assert row[5] == f"{100 * (best.mean() - worst.mean()):+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"
        assert row[9] == "2"


def test_the_share_of_pairs_that_separate_counts_defined_intervals():
    t = constructed()
    share = separated_pairs(t["pairs"]).set_index("name")
    for name in [*DIMS, "total"]:
        want = oracle(t["draws"], name)["separated"]
        assert share.loc[name, "pairs"] == 6 and share.loc[name, "separated"] == want
        assert share.loc[name, "share"] == pytest.approx(want / 6)
    undefined = t["pairs"].copy()
    undefined.loc[undefined.comparison == "A vs B", ["difference_low", "difference_high"]] = np.nan
    general = separated_pairs(undefined).set_index("name").loc["general"]
    assert (general.pairs, general.separated) == (5, 5)  # A vs B had no interval: left out, not counted as apart
    controlled = separated_pairs(t["pairs"], controls=["D"]).set_index("name")  # D a control: 3 pairs of A, B, C
    for name in [*DIMS, "total"]:
        kept = t["pairs"][(t["pairs"]["name"] == name) & ~t["pairs"]["calib"].eq("D") & ~t["pairs"]["versus"].eq("D")]
        apart = int(((kept["difference_low"] > 0) | (kept["difference_high"] < 0)).sum())
        assert controlled.loc[name, "pairs"] == 3 and controlled.loc[name, "separated"] == apart


def test_every_interval_states_its_seeds_and_few_seeds_get_a_caveat(tmp_path):
    text = write(tmp_path, constructed(seeds=2))
    answer = section(text, "## The answer")
    assert "Intervals rest on 2 seeds per set." in answer
    assert "Caveat: these intervals rest on 2 seeds per set, fewer than 5" in answer
    assert "rho [95% interval over seeds" not in answer  # no correlations in these tables: no rho line
    methods = section(text, "## Methods side by side")
    header, *rows = table_rows(methods)
    assert header[:3] == ["setting", "calib", "seeds"]
    assert [r[1:3] for r in rows] == [["mean over 4 sets", "2 seeds"], ["A", "2 seeds"], ["A", "1 seed"],
                                      ["none", "1 seed"]]
    assert "Caveat: these intervals rest on 1-2 seeds per set" in methods
    detail = section(text, f"## {pl.group_title(MAIN)}")
    assert [r[1] for r in table_rows(detail)[1:5]] == ["2"] * 4 and "Caveat" in detail
    plenty = write(tmp_path, constructed(seeds=5))
    assert "Intervals rest on 5 seeds per set." in plenty and "Caveat: these intervals rest on 5" not in plenty
    single = write(tmp_path, constructed(seeds=1))
    assert "rest on 1 seed per set, fewer than 5: they gauge the calibration draw's noise only roughly (with one " \
           "seed, not at all: the evaluation items' noise only)" in single


def test_a_mean_with_perplexity_retention_is_labelled(tmp_path):
    plain = write(tmp_path, constructed(perplexity=False))
    assert "general†" not in plain and "total†" not in plain and report.PERPLEXITY_NOTE not in plain
    text = write(tmp_path, constructed(perplexity=True))
    dims = [r[0] for r in table_rows(section(text, "## The answer"))[1:]]
    assert dims == ["general†", "math", "total†"]  # the total is a mean over general too
    header = table_rows(section(text, "## Methods side by side"))[0]
    assert header[3:] == ["general†", "math", "total†"]
    assert text.count(report.PERPLEXITY_NOTE) == 3  # under the answer, the methods and the per-set tables
    assert "mean of accuracy ratios and perplexity retention" in report.PERPLEXITY_NOTE
    assert "dense / pruned perplexity" in report.PERPLEXITY_NOTE


def test_the_methods_grid_and_data_free_settings_share_one_table(tmp_path):
    t = constructed()
    text = write(tmp_path, t)
    for key in (GRID, FREE):
        assert f"## {pl.group_title(key)}\n" not in text and f"### {pl.group_title(key)}\n" not in text
    rows = table_rows(section(text, "## Methods side by side"))[1:]
    assert [r[0] for r in rows] == [pl.group_title(k) for k in (MAIN, MAIN, GRID, FREE)]
    grid = t["summary"][(t["summary"].method == "wanda") & (t["summary"].name == "total")].iloc[0]
    low, high = 100 * grid.retention_low, 100 * grid.retention_high
    assert rows[2][-1] == f"{100 * grid.retention:.1f} [{low:.1f}, {high:.1f}]"
    lines = pl.methods_rows(t["summary"], t["settings"], [MAIN], "A")
    assert lines["row"].nunique() == 4 and len(lines) == 4 * 3
    a = pl.plot_methods(lines, tmp_path / "a.png")
    assert a.read_bytes() == pl.plot_methods(lines, tmp_path / "b.png").read_bytes()


def png_size(path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_figures_of_many_settings_stay_within_the_height_cap(tmp_path):
    t = constructed()
    main = t["summary"][t["summary"].method == "sparsegpt"]
    many = pd.concat([main.assign(target=f"0.{i}") for i in range(1, 12)], ignore_index=True)  # 11 settings
    for draw in (pl.plot_retention, pl.plot_profile):
        width, height = png_size(draw(many, tmp_path / f"{draw.__name__}.png"))
        assert height <= pl.MAX_HEIGHT * 110 and width > height / 4  # wrapped into columns
    assert pl.panel_grid(11, 3.6) == (4, 3) and pl.panel_grid(2, 3.6) == (2, 1) and pl.panel_grid(3, 20.0) == (1, 3)


def test_a_study_with_fewer_than_three_sources_says_why_it_has_no_correlations(tmp_path):
    t = constructed(sources=["A"])
    text = write(tmp_path, t)
    answer = section(text, "## The answer")
    general = next(r for r in table_rows(answer) if r[0] == "general")
    assert general[1] == "A" and general[3] == "n/a" and general[6] == "n/a (one source)"
    assert "No correlations: Spearman rho needs 3 or more single sources; this setting has 1." in answer
    why = report.no_correlations(t["summary"], SOURCES, SWEPT)
    assert why.startswith("No correlations: Spearman rho needs 3 or more single sources; this study has 1")
    assert pl.plot_rho_heatmap(t["corr"], tmp_path / "h.png", why_none=why).read_bytes()[:4] == b"\x89PNG"
