"""Generate and score a self-generated builder's candidate pool with the dense model."""

import logging

import numpy as np

from calmix.core.devices import compute_device
from calmix.core.logs import setup_logging
from calmix.models.loading import load_model
from calmix.calibration.pools import write_pool
from calmix.calibration.selfgen import generate_pool
from calmix.calibration.shards import read_tokens
from calmix.models.tokenizer import load_tokenizer

setup_logging(snakemake.log[0], snakemake.threads)
p = snakemake.params
tokenizer = load_tokenizer(snakemake.input.model)
documents = read_tokens(snakemake.input.documents)[0] if "documents" in snakemake.input.keys() else None
with compute_device(p.device) as device:
    model = load_model(snakemake.input.model, p.dtype, manifest=p.model_manifest)  # training.json for the world model
    pool, scores, record = generate_pool(
        p.kind, model.to(device), size=p.size, seqlen=p.seqlen,
        seed=int(snakemake.wildcards.seed), bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id,
        batch_size=p.batch_size, score_batch_size=p.score_batch_size, documents=documents, **p.generation,
    )
write_pool(pool, scores, snakemake.output.pool, {**record, "knobs": p.generation, "name": snakemake.wildcards.calib})
logging.info("%s (%s): %d candidates x %d tokens, median perplexity %.3g, median 4-gram aggregation %.3g",
             snakemake.wildcards.calib, p.kind, len(pool), p.seqlen, np.median(scores["perplexity"]),
             np.median(scores["ngram4_aggregation"]))
