"""Prune the dense model (with a calibration shard, unless the method is data-free); save, reload, verify."""

from calmix.core.devices import compute_device, return_freed_memory_to_os
from calmix.core.io import write_json
from calmix.core.logs import setup_logging
from calmix.pruning.checkpoints import prune_checkpoint

setup_logging(snakemake.log[0], snakemake.threads)
return_freed_memory_to_os()
w = snakemake.wildcards
with compute_device(snakemake.params.device) as device:
    report = prune_checkpoint(
        snakemake.input.model,
        getattr(snakemake.input, "shard", None),
        snakemake.output.checkpoint,
        method=w.method,
        target=w.target,
        dtype=snakemake.params.dtype,
        device=device,
        model_manifest=snakemake.params.model_manifest,  # training.json for the world model (common.smk)
        **snakemake.params.options,
    )
write_json(snakemake.output.report, report)  # the checkpoint's prune_report.json, kept if the checkpoint is not
