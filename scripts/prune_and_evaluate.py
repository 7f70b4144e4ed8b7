"""Prune the dense model once per seed (with that seed's calibration shard, unless the method is
data-free) into a temporary checkpoint, score it on every capability dimension, one record per
dimension, and remove it (calmix.evaluation.pruned)."""

from pathlib import Path

from calmix.core.devices import compute_device, return_freed_memory_to_os
from calmix.core.logs import setup_logging
from calmix.evaluation.pruned import prune_and_evaluate
from calmix.pruning.targets import display

setup_logging(snakemake.log[0], snakemake.threads)
return_freed_memory_to_os()
w, params, output = snakemake.wildcards, snakemake.params, snakemake.output
shards = getattr(snakemake.input, "shards", [None] * len(params.seeds))
records = list(zip(output.scores, output.per_item))  # seed by seed, each seed's dimensions in order
per_seed = len(params.dimensions)
with compute_device(params.device) as device:
    for i, seed in enumerate(params.seeds):
        prune_and_evaluate(
            snakemake.input.model,
            shards[i],
            params.checkpoints[i],
            output.reports[i],
            method=w.method,
            target=w.target,
            pruning_code=params.pruning_code,
            options=params.options,
            model_manifest=params.model_manifest,  # training.json for the world model (common.smk)
            dtype=params.dtype,
            device=device,
            dimensions=params.dimensions,  # {dimension: tasks, harness settings, task definitions} (common.smk: evaluation_spec)
            outputs=dict(zip(params.dimensions, records[i * per_seed:(i + 1) * per_seed])),
            data=params.data,
            identity={"model": w.model, "method": w.method, "sparsity": display(w.target), "calib": w.calib, "seed": int(seed)},
            context={"code": params.evaluation_code},
            task_dir=Path(snakemake.scriptdir).parent / params.task_dir,
            data_root=Path.cwd(),
        )
