"""Figures and the Markdown summary, drawn from the tables alone."""

import pandas as pd

from calmix.analysis import plots
from calmix.analysis.report import paper_figures, write_markdown
from calmix.core.logs import setup_logging

setup_logging(snakemake.log[0])
tables = {name: pd.read_parquet(path) for name, path in snakemake.input.items()}
out = snakemake.output
plots.plot_rho_heatmap(tables["correlations"], out.heatmap)
plots.plot_scatters(tables["correlations"], tables["metrics"], tables["summary"], out.scatter)
plots.plot_retention(tables["summary"], out.retention_plot)
plots.plot_profile(tables["summary"], out.profile)
params = snakemake.params
if "builders" in out.keys():
    paper = paper_figures(tables["comparisons"], params.builders, params.baseline)
    plots.plot_comparisons(tables["comparisons"], out.builders, paper)
provenance = [
    "Scores: results/eval/<model>/dense|<method>/<target>/<calib>/seed<seed>/<dimension>.json, per-item "
    "scores beside them in .items.parquet (lm-eval via calmix.evaluation.harness).",
    "Retention: results/tables/retention.csv (per checkpoint), retention_summary.csv (over seeds) and "
    "retention_settings.csv (over calibration sets), retention_comparisons.csv (built sets against single "
    "sources), calmix.analysis.retention, calmix.analysis.intervals and calmix.analysis.comparisons.",
    "Correlations: results/tables/correlations.csv (calmix.analysis.correlation).",
    "OIT metrics: results/tables/metrics.csv (calmix.calibration.metrics, on the windows in results/shards/).",
    "Figures: results/plots/ (calmix.analysis.plots); the full HTML report: snakemake --report results/report.html.",
]
write_markdown(tables["summary"], tables["settings"], tables["retention"], tables["correlations"], tables["metrics"], out.md,
               title=params.title, notes=provenance, comparisons=tables["comparisons"],
               builders=params.builders, baseline=params.baseline)
