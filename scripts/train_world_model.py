"""Train the world's tokenizer and reference model; save both with save_pretrained."""

import logging

from calmix.corpora import read_corpus
from calmix.io import atomic_path, write_json
from calmix.logs import setup_logging
from calmix.tokenizer import train_tokenizer
from calmix.training import train_model

setup_logging(snakemake.log[0], snakemake.threads)
docs = [d["text"] for d in read_corpus(snakemake.input[0])]
tokenizer = train_tokenizer(docs, snakemake.params.vocab_size)
with atomic_path(snakemake.output[0]) as tmp:
    summary = train_model(docs, tokenizer, snakemake.params.arch, snakemake.params.train, snakemake.params.train["seed"], tmp)
    write_json(tmp / "training.json", summary)
logging.info("done: %s", summary)
