"""Pick a self-generated builder's windows from its scored pool and write them as a shard."""

from calmix.core.logs import setup_logging
from calmix.calibration.pools import read_pool
from calmix.calibration.selection import select_windows
from calmix.calibration.shards import write_shard

setup_logging(snakemake.log[0])
p = snakemake.params
pool, scores, pool_manifest = read_pool(snakemake.input.pool)
seed = int(snakemake.wildcards.seed)
chosen, record = select_windows(p.kind, pool, scores, nsamples=p.nsamples, seed=seed, **p.selection)
write_shard(pool[chosen], snakemake.output.shard, {
    "source": snakemake.wildcards.calib,
    "kind": p.kind,
    "seed": seed,
    "nsamples": p.nsamples,
    "seqlen": pool.shape[1],
    "selection_knobs": p.selection,
    "pool": {key: pool_manifest[key] for key in pool_manifest if key != "scores"},
    **record,
})
