"""Fetch one calibration source's raw documents (model-independent)."""

from calmix.corpora import load_documents, write_corpus
from calmix.logs import setup_logging

setup_logging(snakemake.log[0])
docs = load_documents(snakemake.wildcards.calib, snakemake.params.spec, snakemake.params.world_seed or 0)
write_corpus(docs, snakemake.output[0])
