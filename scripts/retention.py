"""Retention of every pruned checkpoint, with bootstrap intervals over items and seeds, and gold-probability
retention of the multiple-choice tasks beside it."""

import logging

from calmix.analysis.comparisons import builder_comparisons, separated_pairs, source_pairs
from calmix.analysis.gold_probability import gold_prob_retention
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
pairs = source_pairs(params.sources, {tuple(s) for s in params.swept})
tables = retention_with_intervals(records, boot, comparisons, pairs)
logging.info("%d eval records, %s: %d rows per checkpoint, %d over seeds, %d source pairs", len(records), boot,
             len(tables.per_checkpoint), len(tables.over_seeds), tables.source_pairs["comparison"].nunique())
for row in separated_pairs(tables.source_pairs, params.controls).itertuples():
    logging.info("%s %s %s, %s: %d of %d pairs of real single sources separate", row.model, row.method, row.target,
                 row.name, row.separated, row.pairs)
out = snakemake.output
for frame, path in zip(tables, (out.per_checkpoint, out.summary, out.settings, out.comparisons, out.source_pairs)):
    write_table(frame, path.removesuffix(".csv"))
gold = gold_prob_retention(records, tables, boot)
logging.info("gold-probability retention: %d multiple-choice tasks, %d rows", gold["task"].nunique(), len(gold))
write_table(gold, out.gold_prob.removesuffix(".csv"))
