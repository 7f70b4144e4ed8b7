"""Train the world's tokenizer and reference model; save both with save_pretrained."""

import logging

from calmix.calibration.corpora import read_corpus
from calmix.core.io import atomic_path
from calmix.core.logs import setup_logging
from calmix.models.loading import write_checkpoint_manifest
from calmix.models.tokenizer import train_tokenizer
from calmix.world.training import train_model

setup_logging(snakemake.log[0], snakemake.threads)
docs = [d["text"] for d in read_corpus(snakemake.input[0])]
tokenizer = train_tokenizer(docs, snakemake.params.vocab_size)
with atomic_path(snakemake.output[0]) as tmp:
    summary = train_model(docs, tokenizer, snakemake.params.arch, snakemake.params.train, snakemake.params.train["seed"], tmp)
    manifest = write_checkpoint_manifest(tmp, "training.json", **summary)  # its sha256, checked by every job that loads it
logging.info("done: %s", manifest)
