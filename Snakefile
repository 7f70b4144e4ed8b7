"""calmix: which calibration data keeps which capabilities of a pruned LLM.

The DAG: raw corpora -> token ids -> calibration shards -> OIT metrics; shards -> pruned checkpoints ->
per-dimension evaluations; dense model -> baseline evaluations; all -> retention, correlations, report.
"""

import os
import sys

from snakemake.utils import min_version

min_version("9.0")


# A study is exactly the config the user names: config.yaml when no --configfile is given, else only
# the --configfile(s), later files overriding earlier ones key by key (and --config key=value last).
if not workflow.overwrite_configfiles:
    if not os.path.isfile("config.yaml"):
        sys.exit(
            f"calmix error: no config.yaml in {os.getcwd()}; run from the repository root, "
            "or name the study: --configfile experiments/<study>.yaml"
        )

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/fetch.smk"
include: "rules/world.smk"
include: "rules/models.smk"
include: "rules/calibration.smk"
include: "rules/metrics.smk"
include: "rules/prune.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/verify.smk"


# Jobs that take a second or two run on the submitting host under a cluster executor: every SLURM job
# starts Snakemake again inside the job (3-4 s) and waits in the queue. (The fetch rules and corpus
# are local for another reason: only the submitting host reaches the hub; see rules/fetch.smk.)
localrules:
    all,
    world_corpus,
    world_eval_items,
    heldout_check,
    shard,
    mix,
    metric_table,
    retention,
    correlations,
    report,


rule all:
    input:
        rules.report.output,
