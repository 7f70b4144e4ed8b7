"""The study's short summary, results/report.md, written from the tables alone, its answer first.

Why a formatter: every figure in the summary must be found in results/tables/ under the same name,
so this module only reads off the tables (formatting, ranking single sources best to worst, reading
which pairs' difference intervals exclude 0, metric means over seeds). The numbers come from
calmix.analysis.intervals (retention with bootstrap intervals), calmix.analysis.comparisons (mean
over sets, differences between pairs of single sources and of built sets against single sources)
and calmix.analysis.correlation (Spearman rho with p, q and seed intervals); beside accuracy, the
continuous score of calmix.analysis.gold_probability (its rank agreement with accuracy is computed
from its table here, with calmix.core.stats.spearman). Every interval is shown
with the seeds it rests on, and a mean that includes perplexity retention is marked. DEFINITIONS is
the short form of docs/definitions.md that goes into the report; keep the two in step. No
timestamps: equal tables give equal bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from calmix.analysis.comparisons import (BEST_SINGLE, COMPARISON_COLUMNS, main_settings, separated_pairs,
                                         separates)
from calmix.analysis.correlation import ALPHA, metric_columns, opposite_sign_pairs
from calmix.analysis.gold_probability import GOLD_PROB_COLUMNS, rank_agreement
from calmix.analysis.plots import (PERPLEXITY_MARK, group_title, in_settings, marked, methods_rows, only_settings,
                                   pair_seeds, perplexity_dimensions, seeds_text, set_tables)
from calmix.analysis.retention import GROUP, TOTAL
from calmix.core.io import write_text
from calmix.pruning.plan import DATA_FREE_CALIB

#: Under this many seeds per set the report adds a caveat under its intervals.
FEW_SEEDS = 5
#: The fewest sources with a defined Spearman rho (calmix.core.stats.spearman is NaN below).
MIN_SOURCES = 3

DEFINITIONS = [
    "A pruning setting is (model, method, target). The target is an unstructured sparsity (0.6: that share "
    "of each pruned layer's weights set to zero) or an N:M pattern (2:4: N of every M consecutive weights "
    "zero); a method label such as wanda-owl names its layerwise sparsity profile (OWL), a plain label "
    "(wanda) is uniform.",
    "The main block: the settings under pruning: itself, each pruned with every single source and built set "
    "of the study; the methods' grid (pruning.compare) and data-free settings (magnitude, on calib none) are "
    "outside it, side by side in one table.",
    "Task retention = pruned score / dense score, the dense score taken from the same model and task "
    "(dense / pruned where lower is better, as for perplexity).",
    "Dimension retention = mean of its tasks' retentions. Total retention = mean of the dimension retentions. "
    f"{PERPLEXITY_MARK} marks a dimension (and the total) whose mean includes perplexity retention (dense / "
    "pruned perplexity), not an accuracy ratio.",
    "Chance-adjusted retention = (pruned - chance) / (dense - chance) at task level, then the same means "
    "(chance = 1/number of choices for multiple choice, 0 for generation; a task without a chance level, "
    "such as perplexity, enters with its plain retention).",
    "A dense score of 0 (or dense <= chance for the chance-adjusted view) gives NaN, not inf; a NaN task "
    "makes its dimension and the total NaN.",
    "Retention figures are the mean over calibration seeds, in percent, with a 95% percentile bootstrap "
    "interval in brackets: each resample draws the seeds of the calibration set with replacement and the "
    "items of every task with replacement, the same items for the dense and every pruned model "
    "(paired). results/tables/retention.csv has each seed's own item interval. Every interval is shown "
    f"with the number of seeds it rests on, and a caveat where that is under {FEW_SEEDS}.",
    "A difference between two calibration sets of one setting (set minus the other, in points) is the "
    "difference of their means over seeds; its 95% interval is the percentile interval of the difference "
    "of their bootstrap resamples, resample by resample: paired by items (the same item draw), independent "
    "by seeds (each set's own seed draw). The two separate where that interval excludes 0; a single source "
    "is indistinguishable from the best where its difference with the best includes 0. The best and worst "
    "single source of a dimension are those with the highest and lowest mean over seeds.",
    "Spearman rho (calmix.core.stats.spearman) is computed across the single sources of one (model, method, "
    "target), after averaging each metric and each retention per source over seeds. p is exact (all n! "
    "re-pairings) for n <= 9, else scipy's t approximation (column p_method). q is the Benjamini-Hochberg "
    "adjusted p over the whole metric x dimension grid of that (model, method, target). The bracket is "
    "a 95% percentile bootstrap interval over seeds (each source's seeds drawn with replacement, a "
    "seed's metric and retention kept together); it needs two or more seeds. It shows how far rho moves "
    "with the calibration draw, not the uncertainty from having these n sources (that is p's job), and as "
    "a percentile interval of a resampled rank statistic it need not be centred on rho. '*' and the "
    "opposite-sign pairs use q < 0.05.",
    "Gold-probability retention (multiple-choice tasks only; results/tables/retention_gold_prob.csv) = pruned "
    "mean / dense mean of the gold choice's probability among the choices (softmax of the choices' "
    "log-likelihoods), over the same items; its intervals are drawn like retention's (the same items for dense "
    "and pruned; over seeds, two-stage). It stands beside accuracy retention, never instead: every headline "
    "figure is accuracy-based retention. Its rank agreement with accuracy is Spearman rho across the single "
    "sources of a setting between their task retention and their gold-probability retention (means over seeds; "
    "p as above, no q); an interval's half-width is (high - low) / 2, in points, and the report shows its median "
    "over the sources.",
]


def _to_markdown(df: pd.DataFrame) -> str:
    """Cells must already be strings: numbers are formatted by the caller, never re-parsed."""
    return df.astype(str).to_markdown(index=False, disable_numparse=True)


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


PERPLEXITY_NOTE = (f"{PERPLEXITY_MARK} includes perplexity retention (dense / pruned perplexity), which is not an "
                   "accuracy ratio: a mean over tasks (for the total, over dimensions) that has both is a mean of "
                   "accuracy ratios and perplexity retention.")


def seed_caveat(counts: Iterable[int]) -> list[str]:
    """The caveat paragraph where intervals rest on fewer than FEW_SEEDS seeds per set; none otherwise."""
    counts = [int(c) for c in counts]
    if not counts or min(counts) >= FEW_SEEDS:
        return []
    one = " (with one seed, not at all: the evaluation items' noise only)" if min(counts) == 1 else ""
    return [f"Caveat: these intervals rest on {seeds_text(counts)} per set, fewer than {FEW_SEEDS}: they gauge the "
            f"calibration draw's noise only roughly{one}; read a separation as tentative.", ""]


def _perplexity_note(names: Iterable[str], perplexity: Collection[str]) -> list[str]:
    """The footnote of PERPLEXITY_MARK, where one of the shown names carries it."""
    return [PERPLEXITY_NOTE, ""] if any(marked(n, perplexity) != n for n in names) else []


def _points(diff: float, low: float, high: float) -> str:
    """A difference (fractions) in points with its interval: '+3.1 [-0.4, +6.2]'."""
    if not np.isfinite(diff):
        return "n/a"
    diff, low, high = (100 * v + 0.0 for v in (diff, low, high))  # + 0.0: no '-0.0' for a negated zero
    return f"{diff:+.1f}" + (f" [{low:+.1f}, {high:+.1f}]" if np.isfinite(low) else "")


def _difference(pairs: dict[tuple[str, str], tuple[float, float, float]], a: str, b: str
                ) -> tuple[float, float, float]:
    """a minus b with its interval; the pairs table holds each pair once, in the sources' order."""
    if (a, b) in pairs:
        return pairs[a, b]
    if (b, a) in pairs:
        diff, low, high = pairs[b, a]
        return -diff, -high, -low
    return math.nan, math.nan, math.nan


def _seeds_of(best: int, worst: int) -> str:
    """The seeds of the best and the worst set: '2', or '3 / 2' where they differ."""
    return str(best) if best == worst else f"{best} / {worst}"


def single_source_table(rows: pd.DataFrame, pairs: pd.DataFrame, perplexity: Collection[str] = (),
                        controls: Sequence[str] = ()) -> pd.DataFrame:
    """The answer's table for one main-block setting: per dimension (and total), the best and worst
    single source by mean retention over seeds, with intervals; best minus worst with its paired
    interval and whether it excludes 0 (separate); the single sources whose difference with the best
    includes 0 (indistinguishable from it), best first; how many pairs of single sources, neither a
    control, separate, of those with an interval; the seeds of best and worst. ``rows``: the setting's over-seeds rows
    of its single sources; ``pairs``: its rows of the source-pairs table."""
    shown = rows[rows["level"].isin(["dimension", TOTAL])]
    pair_rows = pairs[pairs["level"].isin(["dimension", TOTAL])]
    apart = separated_pairs(pair_rows, controls).set_index("name")
    out = []
    for name in [*pd.unique(shown.loc[shown["level"] == "dimension", "name"]), TOTAL]:
        g = shown[(shown["name"] == name) & np.isfinite(shown["retention"])].sort_values(
            ["retention", "calib"], ascending=[False, True], kind="stable")
        label = marked(name, perplexity)
        if g.empty:
            out.append([label, *["n/a"] * 9])
            continue
        lookup = {(r.calib, r.versus): (r.difference, r.difference_low, r.difference_high)
                  for r in pair_rows[pair_rows["name"] == name].itertuples()}
        best, worst = g.iloc[0], g.iloc[-1]
        cell = {r.calib: _pct_interval(100 * r.retention, 100 * r.retention_low, 100 * r.retention_high)
                for r in (best, worst)}
        if len(g) == 1:
            out.append([label, best.calib, cell[best.calib], "n/a", "n/a", "n/a", "n/a (one source)", "n/a", "n/a",
                        str(best.seeds)])
            continue
        diff, low, high = _difference(lookup, best.calib, worst.calib)
        separate = "n/a" if not np.isfinite(low) else "yes" if separates(low, high) else "no"
        alike = []
        for other in g["calib"].iloc[1:]:
            _, lo, hi = _difference(lookup, best.calib, other)
            if np.isfinite(lo) and lo <= 0 <= hi:
                alike.append(other)
        count = apart.loc[name] if name in apart.index else None
        share = ("n/a" if count is None or not count["pairs"] else
                 f"{int(count['separated'])}/{int(count['pairs'])} ({100 * count['share']:.0f}%)")
        out.append([label, best.calib, cell[best.calib], worst.calib, cell[worst.calib], _points(diff, low, high),
                    separate, ", ".join(alike) or "none", share, _seeds_of(best.seeds, worst.seeds)])
    return pd.DataFrame(out, columns=["dimension", "best", "best (%)", "worst", "worst (%)",
                                      "best - worst (points)", "separate", "indistinguishable from best",
                                      "pairs separated", "seeds (best / worst)"])


def no_correlations(summary: pd.DataFrame, sources: Sequence[str],
                    swept: Collection[tuple[str, str]] | None = None) -> str:
    """Why a study has no defined rho (the heatmap's note): no main block, too few single sources for
    Spearman rho, or metrics or retentions constant across them."""
    main = main_settings(summary, sources, swept)
    if not main:
        return ("No correlations: no setting was pruned with the study's single sources (a data-free method "
                "such as magnitude uses no calibration data), so there is nothing to rank.")
    most = max(only_settings(summary, main).groupby(GROUP, sort=False)["calib"]
               .agg(lambda c: len(set(c) & set(sources))))
    if most < MIN_SOURCES:
        return (f"No correlations: Spearman rho needs {MIN_SOURCES} or more single sources; this study has "
                f"{most} in its main block.")
    return "No rho is defined: every metric or retention is constant across the single sources."


def _rho_lines(g: pd.DataFrame | None, n_sources: int, seeds: Iterable[int],
               perplexity: Collection[str]) -> list[str]:
    """The rho grid of one setting with its q-values and the opposite-sign pairs, or why there is none."""
    if n_sources < MIN_SOURCES:
        return [f"No correlations: Spearman rho needs {MIN_SOURCES} or more single sources; this setting has "
                f"{n_sources}.", ""]
    if g is None or g.empty:
        return ["No correlations computed for this setting.", ""]
    ns = sorted(set(g["n"].astype(int)))
    n_text = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    cells = g.assign(cell=[_fmt_rho(r) for r in g.itertuples()])
    grid = (cells.pivot(index="metric", columns="dimension", values="cell")
            .reindex(index=pd.unique(g["metric"]), columns=pd.unique(g["dimension"])))
    grid.columns = [marked(c, perplexity) for c in grid.columns]
    return [f"Across n = {n_text} single sources; rho [95% interval over seeds, {seeds_text(seeds)} per source] "
            "(p, q); q is Benjamini-Hochberg over this grid.", "",
            _to_markdown(grid.rename_axis("metric").reset_index()), "", _opposite_sign_line(g), ""]


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


def _comparison_table(g: pd.DataFrame, builders: dict[str, str] | None = None, baseline: str | None = None,
                      perplexity: Collection[str] = ()) -> pd.DataFrame:
    """Rows: comparisons; columns: what it is compared with, the seeds both sides rest on, dimensions
    and total; cells: difference in points [interval]; with builders, a last column with the paper's
    total difference where it reports one."""
    shown = g[g["level"].isin(["dimension", TOTAL])]
    cells = shown.assign(cell=[_points(r.difference, r.difference_low, r.difference_high) for r in shown.itertuples()])
    grid = cells.pivot(index="comparison", columns="name", values="cell").reindex(
        index=pd.unique(cells["comparison"]), columns=pd.unique(cells["name"]))
    grid.columns = [marked(c, perplexity) for c in grid.columns]
    first = cells.drop_duplicates("comparison").set_index("comparison").reindex(grid.index)
    grid.insert(0, "versus", first["versus"])
    grid.insert(1, "seeds", [pair_seeds(a, b) for a, b in zip(first["seeds"], first["versus_seeds"])])
    if builders is not None:
        figures = paper_figures(g, builders, baseline)
        grid[PAPER_COLUMN] = [f"{figures[c]:+.1f}" if c in figures else "" for c in grid.index]
    return grid.rename_axis("comparison").reset_index()


def _interval_table(table: pd.DataFrame, seeds: pd.Series, perplexity: Collection[str]) -> pd.DataFrame:
    """Rows: calibration sets with their seeds; columns: dimensions and total, mean [interval] (%)."""
    shown = pd.DataFrame({"calib": table.index, "seeds": seeds.reindex(table.index).map(str).to_numpy()})
    for col in table["mean"].columns:
        shown[marked(col, perplexity)] = [_pct_interval(*v) for v in zip(
            table[("mean", col)], table[("low", col)], table[("high", col)])]
    return shown


def _methods_table(rows: pd.DataFrame, perplexity: Collection[str]) -> pd.DataFrame:
    """The methods side by side (plots.methods_rows) as text: one row per setting and set."""
    cells = rows.assign(cell=[_pct_interval(*v) for v in zip(rows["mean"], rows["low"], rows["high"])])
    grid = cells.pivot(index="row", columns="name", values="cell").reindex(columns=pd.unique(rows["name"]))
    grid.columns = [marked(c, perplexity) for c in grid.columns]
    lines = rows.drop_duplicates("row").set_index("row")
    grid.insert(0, "setting", [group_title(k) for k in lines["setting"]])
    grid.insert(1, "calib", lines["calib"])
    grid.insert(2, "seeds", lines["seeds"])
    return grid.reset_index(drop=True)


def _pairs_counted(sources: Sequence[str], controls: Sequence[str]) -> str:
    real = [s for s in sources if s not in controls]
    if not controls:
        return (f"Pairs of single sources are counted over all {len(sources)} single sources ({', '.join(sources)}): "
                "the config marks no source as a control (report.controls), so any control is counted among them.")
    return (f"Pairs of single sources are counted over the {len(real)} that are not controls ({', '.join(real)}); "
            f"the controls ({', '.join(controls)}, report.controls) are in every other column.")


def _answer_section(summary: pd.DataFrame, corr: pd.DataFrame, comparisons: pd.DataFrame, pairs: pd.DataFrame,
                    main: list[tuple], sources: Sequence[str], builders: dict[str, str] | None,
                    baseline: str | None, perplexity: Collection[str], controls: Sequence[str] = ()) -> list[str]:
    """The opening section: per main-block setting, the single sources' best and worst with their
    separation, the rho grid and the built sets; or why the study has no main block."""
    out = ["## The answer", ""]
    if not main:
        return out + ["This study has no main block: no setting was pruned with its single sources (a data-free "
                      "method such as magnitude uses no calibration data), so there is no best source, no pair of "
                      "sources, no correlation and no built set to report. Its settings are under Methods side by "
                      "side.", ""]
    out += [f"The main block: {len(main)} setting{'s' if len(main) > 1 else ''} pruned with each of the study's "
            f"{len(sources)} single sources{f' and {len(builders)} built sets' if builders else ''}; the methods' "
            "grid (pruning.compare) and data-free settings are under Methods side by side. "
            + _pairs_counted(sources, controls), ""]
    corr_groups = {k: g for k, g in corr.groupby(GROUP, sort=False, dropna=False)}
    for key in main:
        rows = only_settings(summary, [key])
        single = rows[rows["calib"].isin(sources)]
        seeds = single.loc[single["level"] == TOTAL, "seeds"]
        out += [f"### {group_title(key)}", "",
                "Single sources: retention (%), mean over seeds [95% interval over seeds and items]. Best - worst is "
                "their difference in points [95% interval: the same items for both, each set's own seeds]; they "
                "separate where it excludes 0. Indistinguishable from best: the single sources whose difference "
                "with the best includes 0. Pairs separated: pairs of single sources whose difference interval "
                f"excludes 0, of those with one. Intervals rest on {seeds_text(seeds)} per set.", "",
                *seed_caveat(seeds),
                _to_markdown(single_source_table(single, only_settings(pairs, [key]), perplexity, controls)), "",
                *_perplexity_note([*pd.unique(single["name"])], perplexity),
                "#### Spearman rho between OIT metrics and retention", "",
                *_rho_lines(corr_groups.get(key), int(single["calib"].nunique()), seeds, perplexity),
                "#### Built sets", ""]
        compared = only_settings(comparisons, [key])
        if compared.empty:
            out += ["No built set was pruned with this setting.", ""]
            continue
        out += ["Difference in retention (points), built set minus the set it is compared with, mean over seeds "
                "[95% paired bootstrap interval]; seeds: the built set's, then the other's where they differ."
                + (f" The last column is the paper's total difference for the comparisons it reports, for "
                   f"reference only (calmix.analysis.report.PAPER_DIFFERENCES); {baseline} stands in for C4."
                   if builders is not None else ""), "",
                _to_markdown(_comparison_table(compared, builders, baseline, perplexity)), ""]
    return out


def _gold_prob_section(gold: pd.DataFrame, main: list[tuple], sources: Sequence[str]) -> list[str]:
    """Per main-block setting and multiple-choice task: whether gold-probability retention ranks the single
    sources like accuracy retention (rho, p, n), the best source by each and their median half-widths; one
    line instead where there is nothing to rank."""
    out = ["## A continuous score beside accuracy", ""]
    agreement = rank_agreement(gold, main, sources)
    if agreement.empty:
        why = ("the study has no main block" if not main else
               "no multiple-choice task of the main block has gold-choice probabilities (the study has none, or "
               "its per-item files were written before they were kept)")
        return out + [f"Skipped: {why}, so there is no continuous score to set beside accuracy.", ""]
    over = only_settings(gold[gold["seed"].isna() & gold["calib"].isin(sources)], main)
    out += ["The headline numbers of this report stay accuracy-based retention (the answer above and every table "
            "below). Beside them, per multiple-choice task: gold-probability retention, the pruned model's mean "
            "probability of the gold choice among the choices over the dense model's on the same items "
            "(results/tables/retention_gold_prob.csv). Rho: Spearman rho across the single sources between their "
            "accuracy retention and their gold-probability retention of the task, means over seeds (p exact for "
            "n <= 9); best: the source each ranks first; half-width: the median over the sources of half the 95% "
            "interval over seeds and items, in points. A rho near +1 with narrower intervals says the continuous "
            f"score ranks the sources as accuracy does, with less noise. Intervals rest on {seeds_text(over['seeds'])} "
            "per set.", ""]
    for key, g in agreement.groupby(GROUP, sort=False):
        cells = pd.DataFrame({
            "dimension": g["dimension"].astype(str), "task": g["task"].astype(str), "n": g["n"].astype(str),
            "rho (p)": [_fmt_agreement(r) for r in g.itertuples()],
            "best by accuracy": g["best_accuracy"].fillna("n/a").astype(str),
            "best by gold prob": g["best_gold_prob"].fillna("n/a").astype(str),
            "accuracy half-width (points)": [_fmt_points(v) for v in g["accuracy_half_width"]],
            "gold-prob half-width (points)": [_fmt_points(v) for v in g["gold_prob_half_width"]]})
        out += [f"### {group_title(key)}", "", _to_markdown(cells), ""]
    return out


def _fmt_agreement(row) -> str:
    """'+0.83 (p=0.042)'; why rho is undefined otherwise."""
    if np.isfinite(row.rho):
        return f"{row.rho:+.2f} (p{_fmt_p(row.p)})"
    return f"n/a (needs {MIN_SOURCES} sources)" if row.n < MIN_SOURCES else "n/a (a constant side)"


def _fmt_points(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{100 * v:.1f}"


def write_markdown(summary: pd.DataFrame, settings: pd.DataFrame, retention: pd.DataFrame, corr: pd.DataFrame,
                   metrics: pd.DataFrame, path: str | os.PathLike, *, title: str = "calmix report",
                   notes: Sequence[str] = (), comparisons: pd.DataFrame | None = None,
                   source_pairs: pd.DataFrame | None = None, sources: Sequence[str] | None = None,
                   swept: Collection[tuple[str, str]] | None = None, builders: dict[str, str] | None = None,
                   baseline: str | None = None, controls: Sequence[str] = (),
                   gold_prob: pd.DataFrame | None = None) -> Path:
    """Write results/report.md atomically.

    Sections: the answer for the main block (docs/definitions.md#main-block; per setting the best and
    worst single source per dimension and total, whether they separate, the sources indistinguishable
    from the best, the share of pairs that separate, the rho grid with q and the opposite-sign pairs,
    the built sets' comparisons, with the paper's figures where ``builders``, name -> kind, is given);
    a continuous score beside accuracy (``gold_prob``, the gold-probability table: per main-block setting
    and multiple-choice task, its rank agreement with accuracy retention across the single sources and
    both median half-widths; skipped with one line where there is none); the methods side by side
    (every other setting in one table); definitions (as computed); retention and chance-adjusted
    retention (%) of every set of each main-block setting; dense scores per task (with the shots,
    metric and lm-eval filter every model was scored with); the OIT metrics (mean over seeds); finally
    ``notes``. ``sources``: the single sources (default: every set neither built nor 'none'); ``swept``:
    the settings of ``pruning:`` (method, target), default any setting with a single source;
    ``source_pairs``: the source-pairs table.
    """
    if sources is None:
        sources = [c for c in pd.unique(summary["calib"].astype(str))
                   if c != DATA_FREE_CALIB and c not in (builders or {})]
    empty = pd.DataFrame(columns=COMPARISON_COLUMNS)
    comparisons = empty if comparisons is None else comparisons
    pairs = empty if source_pairs is None else source_pairs
    perplexity = perplexity_dimensions(retention)
    main = main_settings(summary, sources, swept)

    out: list[str] = [f"# {title}", ""]
    out += _answer_section(summary, corr, comparisons, pairs, main, sources, builders, baseline, perplexity, controls)
    out += _gold_prob_section(pd.DataFrame(columns=GOLD_PROB_COLUMNS) if gold_prob is None else gold_prob,
                              main, sources)

    rows = methods_rows(summary, settings, main, baseline)
    if not rows.empty:
        out += ["## Methods side by side", "",
                "Retention (%) of every setting outside the main block (the methods' grid, pruning.compare, on its "
                "calibration sets; a data-free method on none), beside each main-block setting's mean over its sets "
                f"and its run on {baseline}: mean over seeds [95% interval over seeds and items]. Figure: "
                "results/plots/methods.png.", "",
                *seed_caveat(summary.loc[summary["level"] == TOTAL, "seeds"]),
                _to_markdown(_methods_table(rows, perplexity)), "",
                *_perplexity_note(rows["name"], perplexity)]
        for key, g in comparisons[~in_settings(comparisons, main)].groupby(GROUP, sort=False, dropna=False):
            out += [f"### Built sets: {group_title(key)}", "",
                    _to_markdown(_comparison_table(g, builders, baseline, perplexity)), ""]

    out += ["## Definitions", ""] + [f"- {d}" for d in DEFINITIONS] + [""]

    plain, adjusted = set_tables(summary), set_tables(summary, "chance_adjusted")
    totals = summary[summary["level"] == TOTAL]
    for key in main:
        n_seeds = only_settings(totals, [key]).set_index("calib")["seeds"]
        n_seeds.index = n_seeds.index.astype(str)
        out += [f"## {group_title(key)}", "", "### Retention (%)", "",
                "Every calibration set: mean over seeds [95% interval over seeds and items]; sorted by total, "
                "descending.", "", *seed_caveat(n_seeds),
                _to_markdown(_interval_table(plain[key], n_seeds, perplexity)), "",
                "### Chance-adjusted retention (%)", "",
                _to_markdown(_interval_table(adjusted[key], n_seeds, perplexity)), "",
                *_perplexity_note(plain[key]["mean"].columns, perplexity)]

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

    out += ["## OIT metrics of the calibration sets", "", "Mean over seeds.", ""]
    names = metric_columns(metrics)
    for model, g in metrics.groupby("model", sort=False, dropna=False):
        mean = g.groupby("calib", sort=False, dropna=False)[names].mean(skipna=False)
        shown = mean.map(_fmt_num).rename_axis("calib").reset_index()
        shown["calib"] = shown["calib"].astype(str)
        out += [f"### {model}", "", _to_markdown(shown), ""]

    if notes:
        out += ["## Where the numbers are", ""] + [f"- {n}" for n in notes] + [""]
    return write_text(path, "\n".join(out).rstrip("\n") + "\n")
