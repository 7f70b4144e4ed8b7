"""Compute the OIT metrics of one calibration shard."""

from calmix.core.devices import compute_device
from calmix.core.io import write_json
from calmix.core.logs import setup_logging
from calmix.calibration.metrics import compute_metrics
from calmix.models.loading import load_model
from calmix.calibration.shards import load_windows
from calmix.models.tokenizer import load_tokenizer

setup_logging(snakemake.log[0], snakemake.threads)
w = snakemake.wildcards
with compute_device(snakemake.params.device) as device:
    values = compute_metrics(
        load_windows(snakemake.input.shard),
        snakemake.params.metrics,
        load_tokenizer(snakemake.input.model),
        load_model(snakemake.input.model, manifest=snakemake.params.model_manifest).to(device),
    )
write_json(snakemake.output[0], {"model": w.model, "calib": w.calib, "seed": int(w.seed), **values})
