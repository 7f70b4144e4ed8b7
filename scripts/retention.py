"""Retention of every pruned checkpoint, with bootstrap intervals over items and seeds."""

from calmix.io import write_table
from calmix.logs import setup_logging
from calmix.retention import Bootstrap, load_eval_records, retention_with_intervals

setup_logging(snakemake.log[0])
records = load_eval_records([*snakemake.input.dense, *snakemake.input.pruned], items=True)
per_checkpoint, summary = retention_with_intervals(records, Bootstrap(**snakemake.params.bootstrap))
write_table(per_checkpoint, snakemake.output.per_checkpoint.removesuffix(".csv"))
write_table(summary, snakemake.output.summary.removesuffix(".csv"))
