"""Draw a multi-source mix from its sources' shards of the same seed."""

from calmix.core.logs import setup_logging
from calmix.calibration.mix import build_mix

setup_logging(snakemake.log[0])
spec = snakemake.params.spec
build_mix(
    dict(snakemake.input.items()),
    weights=spec["weights"],
    nsamples=snakemake.params.nsamples,
    seqlen=snakemake.params.seqlen,
    seed=int(snakemake.wildcards.seed),
    name=snakemake.wildcards.calib,
    spec=spec,
    path=snakemake.output.shard,
)
