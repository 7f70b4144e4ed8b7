"""Retention, correlations, plots and the Markdown summary of the whole study."""

import pandas as pd

from calmix import report
from calmix.logs import setup_logging

setup_logging(snakemake.log[0])
out = snakemake.output
records = report.load_eval_records([*snakemake.input.dense, *snakemake.input.pruned])
retention = report.retention_table(records)
metrics = pd.read_parquet(snakemake.input.metrics)
corr = report.correlation_table(metrics, retention, calibs=snakemake.params.single_sources)
report.write_table(retention, out.retention.removesuffix(".csv"))
report.write_table(corr, out.correlations.removesuffix(".csv"))
report.plot_rho_heatmap(corr, out.heatmap)
report.plot_retention(retention, out.retention_plot)
provenance = [
    "Scores: results/eval/<model>/dense|<method>/.../<dimension>.json (lm-eval via calmix.evaluation).",
    f"Retention and correlations: {out.retention}, {out.correlations} (calmix.report).",
    f"OIT metrics: {snakemake.input.metrics} (calmix.metrics, on the windows in results/shards/).",
]
report.write_markdown(retention, corr, metrics, out.md, title=snakemake.params.title, notes=provenance)
