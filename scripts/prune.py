"""Prune the dense model once per seed (with that seed's calibration shard, unless the method is
data-free) into checkpoints that stay, each verified on reload, its report beside it and in
results/prune_reports/; rule evaluate_pruned scores them."""

from calmix.core.devices import compute_device, return_freed_memory_to_os
from calmix.core.io import write_json
from calmix.core.logs import setup_logging
from calmix.models.folders import model_identity
from calmix.pruning.checkpoints import prune_checkpoint, prune_key

setup_logging(snakemake.log[0], snakemake.threads)
return_freed_memory_to_os()
w, params, output, model = snakemake.wildcards, snakemake.params, snakemake.output, snakemake.input.model
shards = getattr(snakemake.input, "shards", [None] * len(output.reports))
dense = model_identity(model, params.model_manifest)  # training.json for the world model (common.smk)
with compute_device(params.device) as device:
    setting = dict(method=w.method, target=w.target, dtype=params.dtype, device=device, **params.options)
    for shard, checkpoint, report in zip(shards, output.checkpoints, output.reports):
        key = prune_key(dense, shard, code=params.pruning_code, **setting)  # as prune_and_evaluate's (calmix.evaluation.pruned)
        write_json(report, prune_checkpoint(model, shard, checkpoint, model_manifest=params.model_manifest, key=key, **setting))
