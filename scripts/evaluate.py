"""Evaluate a dense or pruned checkpoint on one capability dimension's lm-eval tasks."""

from pathlib import Path

from calmix.core.devices import compute_device
from calmix.evaluation.harness import evaluate
from calmix.evaluation.items import write_items
from calmix.core.io import write_json
from calmix.core.logs import setup_logging
from calmix.pruning.targets import display

setup_logging(snakemake.log[0], snakemake.threads)
w = snakemake.wildcards
with compute_device(snakemake.params.device) as device:
    result = evaluate(
        snakemake.input.model,
        snakemake.params.tasks,
        task_dir=Path(snakemake.scriptdir).parent / snakemake.params.task_dir,
        data_root=Path.cwd(),
        dtype=snakemake.params.dtype,
        device=device,
        dimension=w.dimension,
        model_manifest=snakemake.params.model_manifest,  # prune_report.json, or training.json for the world model
        **snakemake.params.harness,  # batch_size, limit, seed and the dimension's own settings (common.smk: harness)
    )
pruned = "method" in w.keys()
write_items(result.pop("items"), snakemake.output.per_item)
write_json(snakemake.output.scores, {
    "model": w.model,
    "method": w.method if pruned else "dense",
    "sparsity": display(w.target) if pruned else "dense",
    "calib": w.calib if pruned else None,
    "seed": int(w.seed) if pruned else None,
    "dimension": w.dimension,
    **result,
})
