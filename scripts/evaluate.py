"""Evaluate a dense or pruned checkpoint on every capability dimension, one record per dimension."""

from pathlib import Path

from calmix.core.devices import compute_device
from calmix.core.logs import setup_logging
from calmix.evaluation.checkpoint import evaluate_checkpoint
from calmix.pruning.targets import display

setup_logging(snakemake.log[0], snakemake.threads)
w, params = snakemake.wildcards, snakemake.params
pruned = "method" in w.keys()
with compute_device(params.device) as device:
    evaluate_checkpoint(
        snakemake.input.model,
        params.dimensions,  # {dimension: tasks, harness settings, task definitions} (common.smk: evaluation_spec)
        dict(zip(params.dimensions, zip(snakemake.output.scores, snakemake.output.per_item))),
        data=params.data,
        identity={
            "model": w.model,
            "method": w.method if pruned else "dense",
            "sparsity": display(w.target) if pruned else "dense",
            "calib": w.calib if pruned else None,
            "seed": int(w.seed) if pruned else None,
        },
        context={"code": params.code},
        task_dir=Path(snakemake.scriptdir).parent / params.task_dir,
        data_root=Path.cwd(),
        dtype=params.dtype,
        device=device,
        model_manifest=params.model_manifest,  # prune_report.json, or training.json for the world model
    )
