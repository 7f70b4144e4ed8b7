"""Fetch one calibration source's raw documents (model-independent) and write their manifest."""

from calmix.calibration.corpora import load_documents, write_corpus
from calmix.core.logs import setup_logging

setup_logging(snakemake.log[0])
name, spec = snakemake.wildcards.calib, snakemake.params.spec
docs, provenance = load_documents(name, spec, snakemake.params.world_seed or 0)
write_corpus(docs, snakemake.output.corpus, name, spec, provenance)
