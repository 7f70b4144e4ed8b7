"""Tokenize one source's corpus with one model's tokenizer (chat documents via its chat template)."""

from calmix.calibration.corpora import read_corpus
from calmix.core.integrity import verify_checkpoint
from calmix.core.io import sha256_file
from calmix.core.logs import setup_logging
from calmix.calibration.shards import tokenize_corpus, write_tokens
from calmix.models.tokenizer import load_tokenizer, tokenizer_hash

setup_logging(snakemake.log[0])
verify_checkpoint(snakemake.input.model, snakemake.params.model_manifest)  # the world model's training.json
tokenizer = load_tokenizer(snakemake.input.model)
docs = read_corpus(snakemake.input.corpus)
write_tokens(
    snakemake.output.tokens,
    tokenize_corpus(docs, tokenizer, snakemake.wildcards.calib),
    [str(d["id"]) for d in docs],
    {
        "source": snakemake.wildcards.calib,
        "corpus_sha256": sha256_file(snakemake.input.corpus),
        "tokenizer_sha256": tokenizer_hash(tokenizer),
        "bos_id": tokenizer.bos_token_id,
        "eos_id": tokenizer.eos_token_id,
    },
)
