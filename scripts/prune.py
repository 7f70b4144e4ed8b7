"""Prune the dense model with one calibration shard; save, reload and verify the checkpoint."""

from calmix.logs import setup_logging
from calmix.models import prune_checkpoint

setup_logging(snakemake.log[0], snakemake.threads)
w = snakemake.wildcards
prune_checkpoint(
    snakemake.input.model,
    snakemake.input.shard,
    snakemake.output[0],
    method=w.method,
    sparsity=float(w.sparsity),
    blocksize=snakemake.params.blocksize,
    percdamp=snakemake.params.percdamp,
    batch_size=snakemake.params.batch_size,
    dtype=snakemake.params.dtype,
)
