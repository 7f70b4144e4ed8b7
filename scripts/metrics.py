"""Compute the OIT metrics of one calibration set's shards (one per seed), with one model load."""

from calmix.core.devices import compute_device
from calmix.core.io import write_json
from calmix.core.logs import setup_logging
from calmix.calibration.metrics import compute_metrics
from calmix.models.loading import load_model
from calmix.calibration.shards import load_windows
from calmix.models.tokenizer import load_tokenizer

setup_logging(snakemake.log[0], snakemake.threads)
w = snakemake.wildcards
p = snakemake.params
with compute_device(p.device) as device:
    model = load_model(snakemake.input.model, p.dtype, manifest=p.model_manifest).to(device)
    tokenizer = load_tokenizer(snakemake.input.model)
    for seed, shard, out in zip(p.seeds, snakemake.input.shards, snakemake.output):
        values = compute_metrics(load_windows(shard), p.metrics, tokenizer, model, p.batch_size)
        write_json(out, {"model": w.model, "calib": w.calib, "seed": int(seed), **values})
