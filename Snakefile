"""calmix: which calibration data keeps which capabilities of a pruned LLM.

The DAG: raw corpora -> token ids -> calibration shards -> OIT metrics; shards -> pruned checkpoints ->
per-dimension evaluations; dense model -> baseline evaluations; all -> retention, correlations, report.
"""

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/fetch.smk"
include: "rules/world.smk"
include: "rules/calibration.smk"
include: "rules/metrics.smk"
include: "rules/prune.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    input:
        rules.report.output,
