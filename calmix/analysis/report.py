"""The study's short summary, results/report.md, written from the tables alone.

Why a formatter: every figure in the summary must be found in results/tables/ under the same name,
so this module only reads off the tables (formatting, ranking sets best to worst, the spread between
them, metric means over seeds). The numbers come from calmix.analysis.intervals
(retention with bootstrap intervals), calmix.analysis.comparisons (mean over sets, built sets
against single sources) and calmix.analysis.correlation (Spearman rho with p, q and seed
intervals). DEFINITIONS is the short form of docs/definitions.md that goes into the report; keep the
two in step. No timestamps: equal tables give equal bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from calmix.analysis.comparisons import BEST_SINGLE
from calmix.analysis.correlation import ALPHA, metric_columns, opposite_sign_pairs
from calmix.analysis.plots import group_title, set_tables
from calmix.analysis.retention import GROUP, TOTAL
from calmix.core.io import write_text

DEFINITIONS = [
    "A pruning setting is (model, method, target). The target is an unstructured sparsity (0.6: that share "
    "of each pruned layer's weights set to zero) or an N:M pattern (2:4: N of every M consecutive weights "
    "zero); a method label such as wanda-owl names its layerwise sparsity profile (OWL), a plain label "
    "(wanda) is uniform.",
    "Task retention = pruned score / dense score, the dense score taken from the same model and task "
    "(dense / pruned where lower is better, as for perplexity).",
    "Dimension retention = mean of its tasks' retentions. Total retention = mean of the dimension retentions.",
    "Chance-adjusted retention = (pruned - chance) / (dense - chance) at task level, then the same means "
    "(chance = 1/number of choices for multiple choice, 0 for generation; a task without a chance level, "
    "such as perplexity, enters with its plain retention).",
    "A dense score of 0 (or dense <= chance for the chance-adjusted view) gives NaN, not inf; a NaN task "
    "makes its dimension and the total NaN.",
    "Retention figures are the mean over calibration seeds, in percent, with a 95% percentile bootstrap "
    "interval in brackets: each resample draws the seeds of the calibration set with replacement and the "
    "items of every task with replacement, the same items for the dense and every pruned model "
    "(paired). results/tables/retention.csv has each seed's own item interval.",
    "Spearman rho (calmix.core.stats.spearman) is computed across calibration sources of one (model, method, "
    "target), after averaging each metric and each retention per source over seeds. p is exact (all n! "
    "re-pairings) for n <= 9, else scipy's t approximation (column p_method). q is the Benjamini-Hochberg "
    "adjusted p over the whole metric x dimension grid of that (model, method, target). The bracket is "
    "a 95% percentile bootstrap interval over seeds (each source's seeds drawn with replacement, a "
    "seed's metric and retention kept together); it needs two or more seeds. It shows how far rho moves "
    "with the calibration draw, not the uncertainty from having these n sources (that is p's job), and as "
    "a percentile interval of a resampled rank statistic it need not be centred on rho. '*' and the "
    "opposite-sign pairs use q < 0.05.",
]


def _to_markdown(df: pd.DataFrame) -> str:
    """Cells must already be strings: numbers are formatted by the caller, never re-parsed."""
    return df.astype(str).to_markdown(index=False, disable_numparse=True)


def _pct(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.1f}"


def _pct_interval(mean: float, low: float, high: float) -> str:
    """'83.1 [80.2, 85.9]'; the bracket is left out where the interval is undefined."""
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.1f}" + (f" [{low:.1f}, {high:.1f}]" if np.isfinite(low) else "")


def _fmt_p(p: float) -> str:
    return "n/a" if not np.isfinite(p) else ("<0.001" if p < 0.001 else f"={p:.3f}")


def _fmt_rho(row) -> str:
    """'+0.71 [+0.52, +0.85] (p=0.004, q=0.020)'; 'n/a' where rho is undefined."""
    if not np.isfinite(row.rho):
        return "n/a"
    ci = f" [{row.rho_low:+.2f}, {row.rho_high:+.2f}]" if np.isfinite(row.rho_low) else ""
    return f"{row.rho:+.2f}{ci} (p{_fmt_p(row.p)}, q{_fmt_p(row.q)})"


def _fmt_num(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.4g}"


def _opposite_sign_line(corr: pd.DataFrame) -> str:
    """One line naming every metric whose significant rhos have opposite signs across dimensions."""
    pairs = opposite_sign_pairs(corr)
    if pairs.empty:
        return f"Opposite-sign pairs (q < {ALPHA:g}): none."
    parts = []
    for metric, g in pairs.groupby("metric", sort=False):
        pos = g.drop_duplicates("dim_pos")
        neg = g.drop_duplicates("dim_neg")
        plus = ", ".join(f"{r.dim_pos} {r.rho_pos:+.2f} (q{_fmt_p(r.q_pos)})" for r in pos.itertuples())
        minus = ", ".join(f"{r.dim_neg} {r.rho_neg:+.2f} (q{_fmt_p(r.q_neg)})" for r in neg.itertuples())
        parts.append(f"{metric}: {plus} vs {minus}")
    return f"Opposite-sign pairs (q < {ALPHA:g}): " + "; ".join(parts) + "."


def _interval_table(table: pd.DataFrame, seeds: pd.Series) -> pd.DataFrame:
    cols = list(table["mean"].columns)
    shown = pd.DataFrame({"calib": table.index, "seeds": seeds.reindex(table.index).map(str).to_numpy()})
    for col in cols:
        shown[col] = [_pct_interval(*v) for v in zip(table[("mean", col)], table[("low", col)],
                                                      table[("high", col)])]
    return shown


def _glance(settings: pd.DataFrame, tables: dict[tuple, pd.DataFrame]) -> pd.DataFrame:
    """One row per (model, method, target): retention per dimension and total as the mean over sets
    with its interval, and the best and worst set by total retention."""
    rows = []
    levels = settings[settings["level"].isin(["dimension", TOTAL])]
    for key, g in levels.groupby(GROUP, sort=False, dropna=False):
        row = {"setting": group_title(key), "sets": str(int(g["sets"].iat[0]))}
        row.update({r.name: _pct_interval(100 * r.retention, 100 * r.retention_low, 100 * r.retention_high)
                    for r in g.itertuples()})
        ranked = tables[key][("mean", TOTAL)].dropna() if key in tables else pd.Series(dtype=float)
        row["best"] = f"{ranked.idxmax()} {_pct(ranked.max())}" if len(ranked) else "n/a"
        row["worst"] = f"{ranked.idxmin()} {_pct(ranked.min())}" if len(ranked) else "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


def _same_data(tables: dict[tuple, pd.DataFrame], calib: str) -> pd.DataFrame:
    """One row per (model, method, target) calibrated on ``calib`` (a data-free method on 'none'):
    the methods side by side on the same data, which the means over sets are not when settings were
    pruned with different sets (pruning.compare)."""
    rows = []
    for key, table in tables.items():
        on = calib if calib in table.index else "none" if "none" in table.index else None
        if on is None:
            continue
        row = {"setting": group_title(key), "calib": on}
        row.update({col: _pct_interval(table.at[on, ("mean", col)], table.at[on, ("low", col)], table.at[on, ("high", col)])
                    for col in table["mean"].columns})
        rows.append(row)
    return pd.DataFrame(rows)


def _best_worst(table: pd.DataFrame) -> pd.DataFrame:
    """Best and worst set per dimension (and total), with intervals, and the spread in points."""
    rows = []
    for col in table["mean"].columns:
        s = table[("mean", col)].dropna()
        if s.empty:
            rows.append([col, "n/a", "n/a", "n/a", "n/a", "n/a"])
            continue
        best, worst = s.idxmax(), s.idxmin()
        cell = {c: _pct_interval(table.at[c, ("mean", col)], table.at[c, ("low", col)],
                                 table.at[c, ("high", col)]) for c in (best, worst)}
        rows.append([col, best, cell[best], worst, cell[worst], _pct(s[best] - s[worst])])
    return pd.DataFrame(rows, columns=["dimension", "best", "best (%)", "worst", "worst (%)",
                                       "spread (points)"])


#: The total-retention differences (points) the paper reports (arXiv 2606.03328, abstract: Llama-3.1-8B,
#: SparseGPT at 60%), keyed by (kind of the built set, what it is compared with): the uniform mix
#: 58.8% against 50.0% for the best single source and 40.0% for C4; IGSP 2.4 points above Self-Cal and
#: 4.8 above SGS. Shown beside this study's own differences, never used in a computation.
PAPER_DIFFERENCES = {
    ("mix", BEST_SINGLE): 8.8,
    ("mix", "baseline"): 18.8,
    ("igsp", "selfcal"): 2.4,
    ("igsp", "sgs"): 4.8,
}


def paper_difference(calib: str, versus: str, comparison: str, builders: dict[str, str],
                     baseline: str | None) -> float | None:
    """The paper's figure for one comparison of the comparisons table, or None where it reports none.

    builders: built set -> kind (config calibration.builders); baseline: report.baseline, the
    study's stand-in for C4."""
    if comparison == f"{calib} vs {BEST_SINGLE}":
        role = BEST_SINGLE
    elif versus == baseline:
        role = "baseline"
    else:
        role = builders.get(versus)
    return PAPER_DIFFERENCES.get((builders.get(calib), role))


def paper_figures(comparisons: pd.DataFrame, builders: dict[str, str], baseline: str | None) -> dict[str, float]:
    """comparison label -> the paper's total difference, for the comparisons of the table it reports."""
    first = comparisons.drop_duplicates("comparison")
    figures = {r.comparison: paper_difference(r.calib, r.versus, r.comparison, builders, baseline)
               for r in first.itertuples()}
    return {label: figure for label, figure in figures.items() if figure is not None}


PAPER_COLUMN = "paper, total (Llama-3.1-8B, SparseGPT 60%)"


def _comparison_table(g: pd.DataFrame, builders: dict[str, str] | None = None,
                      baseline: str | None = None) -> pd.DataFrame:
    """Rows: comparisons; columns: dimensions and total; cells: difference in points [interval]; with
    builders, a last column with the paper's total difference where it reports one."""
    shown = g[g["level"].isin(["dimension", TOTAL])]
    cells = shown.assign(cell=[
        "n/a" if not np.isfinite(r.difference) else
        f"{100 * r.difference:+.1f}" + (f" [{100 * r.difference_low:+.1f}, {100 * r.difference_high:+.1f}]"
                                        if np.isfinite(r.difference_low) else "")
        for r in shown.itertuples()])
    grid = cells.pivot(index="comparison", columns="name", values="cell").reindex(
        index=pd.unique(cells["comparison"]), columns=pd.unique(cells["name"]))
    versus = cells.drop_duplicates("comparison").set_index("comparison")["versus"]
    grid.insert(0, "versus", versus.reindex(grid.index))
    if builders is not None:
        figures = paper_figures(g, builders, baseline)
        grid[PAPER_COLUMN] = [f"{figures[c]:+.1f}" if c in figures else "" for c in grid.index]
    return grid.rename_axis(None, axis=1).reset_index()


def write_markdown(summary: pd.DataFrame, settings: pd.DataFrame, retention: pd.DataFrame, corr: pd.DataFrame,
                   metrics: pd.DataFrame, path: str | os.PathLike, *, title: str = "calmix report",
                   notes: Sequence[str] = (), comparisons: pd.DataFrame | None = None,
                   builders: dict[str, str] | None = None, baseline: str | None = None) -> Path:
    """Write results/report.md atomically.

    Sections: notes, definitions (as computed), dense scores per task (with the shots, metric and
    lm-eval filter every model was scored with), methods at a glance, then per
    (model, method, target): retention and chance-adjusted retention (%) per set x dimension + total
    with intervals, sorted by total; best and worst set per dimension; the rho grid with intervals, p
    and q; the opposite-sign pairs; the built sets' comparisons (with the paper's figures where
    ``builders``, name -> kind, is given); finally the OIT metrics (mean over seeds).
    """
    out: list[str] = [f"# {title}", ""]
    if notes:
        out += [f"- {n}" for n in notes] + [""]
    out += ["## Definitions", ""] + [f"- {d}" for d in DEFINITIONS] + [""]

    tasks = retention[retention["level"] == "task"]
    dense = tasks.drop_duplicates(["model", "dimension", "name"])
    out += ["## Dense scores", "", "Each task as the dense and every pruned model were scored: shots before each item, "
            "lm-eval's metric and the filter its answers went through (none: unfiltered).", ""]
    if dense.empty:
        out += ["No task-level retention rows.", ""]
    else:
        metric = dense["metric"].astype(str).str.partition(",")
        shown = pd.DataFrame({
            "model": dense["model"].astype(str), "dimension": dense["dimension"].astype(str),
            "task": dense["name"].astype(str), "shots": dense["num_fewshot"].astype(str),
            "metric": metric[0], "filter": metric[2],
            "dense score": dense["dense_score"].map(lambda v: f"{v:.4g}"),
            "chance": dense["chance"].map(lambda v: "n/a" if not np.isfinite(v) else f"{v:.3f}")})
        out += [_to_markdown(shown), ""]

    plain, adjusted = set_tables(summary), set_tables(summary, "chance_adjusted")
    if plain:
        out += ["## Methods at a glance", "",
                "Retention (%) per pruning setting: mean over calibration sets (each the mean over its "
                "seeds) [95% interval], and the best and worst set by total retention.", "",
                _to_markdown(_glance(settings, plain)), ""]
        same = _same_data(plain, baseline) if baseline is not None else pd.DataFrame()
        if len(same) > 1:
            out += [f"### Methods on the same calibration data ({baseline})", "",
                    f"Retention (%) of each setting calibrated on {baseline} (a data-free method on none), mean "
                    "over seeds [95% interval over seeds and items].", "", _to_markdown(same), ""]
    seeds = summary[summary["level"] == TOTAL].set_index([*GROUP, "calib"])["seeds"]
    corr_groups = {k: g for k, g in corr.groupby(GROUP, sort=False, dropna=False)}
    for key, table in plain.items():
        n_seeds = seeds.loc[key]
        n_seeds.index = n_seeds.index.astype(str)
        out += [f"## {group_title(key)}", "", "### Retention (%)", "",
                "Mean over seeds [95% interval over seeds and items]; sorted by total, descending.", "",
                _to_markdown(_interval_table(table, n_seeds)), "",
                "### Chance-adjusted retention (%)", "", _to_markdown(_interval_table(adjusted[key], n_seeds)), "",
                "### Best and worst set per dimension", "", _to_markdown(_best_worst(table)), ""]
        g = corr_groups.get(key)
        out += ["### Spearman rho between OIT metrics and retention", ""]
        if g is None or g.empty:
            out += ["No correlations computed.", ""]
            continue
        ns = sorted(set(g["n"].astype(int)))
        n_text = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
        cells = g.assign(cell=[_fmt_rho(r) for r in g.itertuples()])
        grid = (cells.pivot(index="metric", columns="dimension", values="cell")
                .reindex(index=pd.unique(g["metric"]), columns=pd.unique(g["dimension"])))
        out += [f"Across n = {n_text} calibration sources; rho [95% interval over seeds] (p, q).", "",
                _to_markdown(grid.rename_axis(None, axis=1).reset_index()), "",
                _opposite_sign_line(g), ""]

    if comparisons is not None and not comparisons.empty:
        out += ["## Built calibration sets against single sources", "",
                "Difference in retention (points), built set minus the set it is compared with, mean over seeds "
                "[95% paired bootstrap interval]."
                + (f" The last column is the paper's total difference for the comparisons it reports, for reference "
                   f"only (calmix.analysis.report.PAPER_DIFFERENCES); {baseline} stands in for C4." if builders is not None
                   else ""), ""]
        for key, g in comparisons.groupby(GROUP, sort=False, dropna=False):
            out += [f"### {group_title(key)}", "", _to_markdown(_comparison_table(g, builders, baseline)), ""]

    out += ["## OIT metrics of the calibration sets", "", "Mean over seeds.", ""]
    names = metric_columns(metrics)
    for model, g in metrics.groupby("model", sort=False, dropna=False):
        mean = g.groupby("calib", sort=False, dropna=False)[names].mean(skipna=False)
        shown = mean.map(_fmt_num).rename_axis("calib").reset_index()
        shown["calib"] = shown["calib"].astype(str)
        out += [f"### {model}", "", _to_markdown(shown), ""]

    return write_text(path, "\n".join(out).rstrip("\n") + "\n")
