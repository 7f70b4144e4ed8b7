"""Evaluate the dense model on every capability dimension, one record per dimension."""

from pathlib import Path

from calmix.core.devices import compute_device
from calmix.core.logs import setup_logging
from calmix.evaluation.checkpoint import evaluate_checkpoint

setup_logging(snakemake.log[0], snakemake.threads)
params = snakemake.params
with compute_device(params.device) as device:
    evaluate_checkpoint(
        snakemake.input.model,
        params.dimensions,  # {dimension: tasks, harness settings, task definitions} (common.smk: evaluation_spec)
        dict(zip(params.dimensions, zip(snakemake.output.scores, snakemake.output.per_item))),
        data=params.data,
        identity={"model": snakemake.wildcards.model, "method": "dense", "sparsity": "dense", "calib": None, "seed": None},
        context={"code": params.code},
        task_dir=Path(snakemake.scriptdir).parent / params.task_dir,
        data_root=Path.cwd(),
        dtype=params.dtype,
        device=device,
        model_manifest=params.model_manifest,  # training.json for the world model, conversion.json for GGUF
    )
