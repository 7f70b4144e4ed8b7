"""Write one task's items, built offline (calmix.evaluation.offline), as jsonl for lm-eval, with their provenance."""

from calmix.core.io import sha256_file, write_json
from calmix.core.records import TaskItemsManifest
from calmix.core.logs import setup_logging
from calmix.evaluation.offline import build_items, write_items_jsonl

setup_logging(snakemake.log[0])
task = snakemake.wildcards.task
items, provenance = build_items(task, snakemake.params.spec)
write_items_jsonl(items, snakemake.output.jsonl)
manifest: TaskItemsManifest = {"task": task, "spec": snakemake.params.spec, **provenance,
                               "items": len(items), "sha256": sha256_file(snakemake.output.jsonl)}
write_json(snakemake.output.manifest, manifest)
