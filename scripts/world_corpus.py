"""Write the built-in world's pretraining corpus (and its manifest, like any corpus).

Sample seed 0; calibration sources draw with seed 1, so no calibration document is a training one.
"""

from calmix.calibration.corpora import write_corpus
from calmix.core.logs import setup_logging
from calmix.world.domain import World

setup_logging(snakemake.log[0])
seed, n = snakemake.params.seed, snakemake.params.docs
docs = [{"id": f"pretrain:{i}", "text": t} for i, t in enumerate(World(seed).documents("pretrain", n, seed=0))]
spec = {"kind": "world", "generator": "pretrain", "docs": n}
write_corpus(docs, snakemake.output.corpus, "pretrain", spec, {"world_seed": seed, "sample_seed": 0})
