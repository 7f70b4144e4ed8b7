"""Tokenize a source's corpus and sample one calibration shard."""

from calmix.corpora import read_corpus
from calmix.io import sha256_file
from calmix.logs import setup_logging
from calmix.shards import build_shard
from calmix.tokenizer import load_tokenizer, tokenizer_hash

setup_logging(snakemake.log[0])
tokenizer = load_tokenizer(snakemake.input.model)
build_shard(
    read_corpus(snakemake.input.corpus),
    tokenizer,
    nsamples=snakemake.params.nsamples,
    seqlen=snakemake.params.seqlen,
    seed=int(snakemake.wildcards.seed),
    source=snakemake.wildcards.calib,
    spec=snakemake.params.spec,
    corpus_sha256=sha256_file(snakemake.input.corpus),
    tokenizer_sha256=tokenizer_hash(tokenizer),
    path=snakemake.output.shard,
)
