"""Write the built-in world's pretraining corpus."""

from calmix.corpora import write_corpus
from calmix.logs import setup_logging
from calmix.world import World

setup_logging(snakemake.log[0])
write_corpus(World(snakemake.params.seed).documents("pretrain", snakemake.params.docs, seed=0), snakemake.output[0])
