"""Prune the dense model (with a calibration shard, unless the method is data-free); save, reload, verify."""

from calmix.core.devices import compute_device, return_freed_memory_to_os
from calmix.core.logs import setup_logging
from calmix.pruning.checkpoints import prune_checkpoint

setup_logging(snakemake.log[0], snakemake.threads)
return_freed_memory_to_os()
w = snakemake.wildcards
with compute_device(snakemake.params.device) as device:
    prune_checkpoint(
        snakemake.input.model,
        getattr(snakemake.input, "shard", None),
        snakemake.output[0],
        method=w.method,
        target=w.target,
        dtype=snakemake.params.dtype,
        device=device,
        model_manifest=snakemake.params.model_manifest,  # training.json for the world model (common.smk)
        **snakemake.params.options,
    )
