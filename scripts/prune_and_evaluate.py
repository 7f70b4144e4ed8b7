"""Prune the dense model (with a calibration shard, unless the method is data-free) and score the pruned
checkpoint on every capability dimension, one record per dimension; remove it unless it is kept."""

from pathlib import Path

from calmix.core.devices import compute_device, return_freed_memory_to_os
from calmix.core.logs import setup_logging
from calmix.evaluation.pruned import prune_and_evaluate
from calmix.pruning.targets import display

setup_logging(snakemake.log[0], snakemake.threads)
return_freed_memory_to_os()
w, params = snakemake.wildcards, snakemake.params
with compute_device(params.device) as device:
    prune_and_evaluate(
        snakemake.input.model,
        getattr(snakemake.input, "shard", None),
        params.checkpoint,
        snakemake.output.report,
        keep=params.keep,
        method=w.method,
        target=w.target,
        pruning_code=params.pruning_code,
        options=params.options,
        model_manifest=params.model_manifest,  # training.json for the world model (common.smk)
        dtype=params.dtype,
        device=device,
        dimensions=params.dimensions,  # {dimension: tasks, harness settings, task definitions} (common.smk: evaluation_spec)
        outputs=dict(zip(params.dimensions, zip(snakemake.output.scores, snakemake.output.per_item))),
        data=params.data,
        identity={"model": w.model, "method": w.method, "sparsity": display(w.target), "calib": w.calib, "seed": int(w.seed)},
        context={"code": params.evaluation_code},
        task_dir=Path(snakemake.scriptdir).parent / params.task_dir,
        data_root=Path.cwd(),
    )
