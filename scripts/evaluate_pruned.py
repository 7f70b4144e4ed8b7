"""Score kept pruned checkpoints (rule prune made them) on every capability dimension, one record per
dimension, rescoring only the dimensions whose record is not current."""

from pathlib import Path

from calmix.core.devices import compute_device
from calmix.core.logs import setup_logging
from calmix.evaluation.checkpoint import evaluate_checkpoint
from calmix.models.folders import model_identity

setup_logging(snakemake.log[0], snakemake.threads)
params = snakemake.params
records = iter(zip(snakemake.output.scores, snakemake.output.per_item))  # checkpoint by checkpoint, its dimensions in order
dense = model_identity(snakemake.input.model, params.model_manifest)  # the model they were pruned from
with compute_device(params.device) as device:
    for checkpoint, identity in zip(snakemake.input.checkpoints, params.identities):
        evaluate_checkpoint(
            checkpoint,
            params.dimensions,  # {dimension: tasks, harness settings, task definitions} (common.smk: evaluation_spec)
            {dimension: next(records) for dimension in params.dimensions},
            data=params.data,
            identity=identity,  # model, method, sparsity, calib, seed (common.smk: evaluated_identities)
            context={"code": params.evaluation_code},
            task_dir=Path(snakemake.scriptdir).parent / params.task_dir,
            data_root=Path.cwd(),
            dtype=params.dtype,
            device=device,
            model_manifest="prune_report.json",  # always calmix's own checkpoint: refused without it
            dense_model=dense,
        )
