"""Retention of every pruned checkpoint, with bootstrap intervals over items and seeds."""

import logging

from calmix.analysis.comparisons import builder_comparisons
from calmix.analysis.intervals import Bootstrap, retention_with_intervals
from calmix.analysis.retention import check_evaluated_weights, load_eval_records
from calmix.core.io import write_table
from calmix.core.logs import setup_logging

setup_logging(snakemake.log[0])
boot = Bootstrap(**snakemake.params.bootstrap)
records = load_eval_records([*snakemake.input.dense, *snakemake.input.pruned], items=True)
check_evaluated_weights(records)  # against results/prune_reports/ (snakemake.input.prune_reports)
params = snakemake.params
comparisons = builder_comparisons(params.sources, params.builders, params.baseline)
per_checkpoint, summary, settings, compared = retention_with_intervals(records, boot, comparisons)
logging.info("%d eval records, %s: %d rows per checkpoint, %d over seeds", len(records), boot,
             len(per_checkpoint), len(summary))
write_table(per_checkpoint, snakemake.output.per_checkpoint.removesuffix(".csv"))
write_table(summary, snakemake.output.summary.removesuffix(".csv"))
write_table(settings, snakemake.output.settings.removesuffix(".csv"))
write_table(compared, snakemake.output.comparisons.removesuffix(".csv"))
