"""Figures and the Markdown summary, drawn from the tables alone."""

import pandas as pd

from calmix.analysis import plots
from calmix.analysis.comparisons import main_settings
from calmix.analysis.report import no_correlations, paper_figures, write_markdown
from calmix.core.logs import setup_logging

setup_logging(snakemake.log[0])
tables = {name: pd.read_parquet(path) for name, path in snakemake.input.items()}
out, params = snakemake.output, snakemake.params
summary, sources, swept = tables["summary"], params.sources, {tuple(s) for s in params.swept}
perplexity = plots.perplexity_dimensions(tables["retention"])
main = main_settings(summary, sources, swept)
drawn = plots.only_settings(summary, main) if main else summary  # the main block, else every setting
single = summary[summary["calib"].isin(sources)]
plots.plot_rho_heatmap(tables["correlations"], out.heatmap, seeds=plots.setting_seeds(single),
                       why_none=no_correlations(summary, sources, swept))
plots.plot_scatters(tables["correlations"], tables["metrics"], summary, out.scatter, sources)
plots.plot_retention(drawn, out.retention_plot, perplexity)
plots.plot_profile(drawn, out.profile, perplexity)
plots.plot_methods(plots.methods_rows(summary, tables["settings"], main, params.baseline), out.methods, perplexity)
if "builders" in out.keys():
    paper = paper_figures(tables["comparisons"], params.builders, params.baseline)
    plots.plot_comparisons(tables["comparisons"], out.builders, paper, perplexity)
provenance = [
    "Scores: results/eval/<model>/dense|<method>/<target>/<calib>/seed<seed>/<dimension>.json, per-item "
    "scores beside them in .items.parquet (lm-eval via calmix.evaluation.harness).",
    "Retention: results/tables/retention.csv (per checkpoint), retention_summary.csv (over seeds) and "
    "retention_settings.csv (over calibration sets), retention_comparisons.csv (built sets against single "
    "sources), retention_source_pairs.csv (every pair of single sources of the main block), "
    "calmix.analysis.retention, calmix.analysis.intervals and calmix.analysis.comparisons.",
    "Gold-probability retention of the multiple-choice tasks, beside accuracy retention: "
    "results/tables/retention_gold_prob.csv (calmix.analysis.gold_probability).",
    "Correlations: results/tables/correlations.csv (calmix.analysis.correlation).",
    "OIT metrics: results/tables/metrics.csv (calmix.calibration.metrics, on the windows in results/shards/).",
    "Figures: results/plots/ (calmix.analysis.plots); the full HTML report: snakemake --report results/report.html.",
]
write_markdown(summary, tables["settings"], tables["retention"], tables["correlations"], tables["metrics"], out.md,
               title=params.title, notes=provenance, comparisons=tables["comparisons"],
               source_pairs=tables["source_pairs"], sources=sources, swept=swept, builders=params.builders,
               baseline=params.baseline, controls=params.controls, gold_prob=tables["gold_prob"])
