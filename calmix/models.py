"""Loading dense models and writing verified pruned checkpoints."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from calmix.io import atomic_path, read_json, sha256_file, write_json
from calmix.shards import load_windows, manifest_path
from calmix.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SPARSITY_TOLERANCE = 0.005


def load_model(path: str | Path, dtype: str = "float32"):
    """A causal LM in eval mode from a save_pretrained folder."""
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype])
    return model.eval()


def prune_checkpoint(
    model_dir: str | Path, shard: str | Path, out_dir: str | Path, *, method: str, sparsity: float,
    blocksize: int = 128, percdamp: float = 0.01, batch_size: int = 16, dtype: str = "float32",
) -> dict:
    """Prune model_dir with the shard's windows and save to out_dir, reloaded and verified first.

    The checkpoint is dense safetensors with exact zeros (what transformers and vLLM load) plus
    prune_report.json. A checkpoint whose reloaded sparsity is off target is an error, never output.
    """
    from calmix.pruning import PruningError, model_sparsity, prune_model

    start = time.perf_counter()
    model = load_model(model_dir, dtype)
    windows = torch.from_numpy(load_windows(shard))
    report = prune_model(
        model, windows, sparsity, method=method, blocksize=blocksize, percdamp=percdamp, batch_size=batch_size,
    )
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        load_tokenizer(model_dir).save_pretrained(str(tmp))
        reloaded = model_sparsity(load_model(tmp, dtype))
        off = {n: s for n, s in reloaded["layers"].items() if abs(s - sparsity) > SPARSITY_TOLERANCE}
        if abs(reloaded["sparsity"] - sparsity) > SPARSITY_TOLERANCE or off:
            raise PruningError(
                f"{out_dir}: reloaded sparsity {reloaded['sparsity']:.4f} is off target {sparsity} "
                f"(layers off target: {sorted(off)[:5]})"
            )
        report.update(
            shard=str(shard),
            shard_sha256=read_json(manifest_path(shard))["sha256"],
            dense_model=str(model_dir),
            verified_sparsity=reloaded["sparsity"],
            weights_sha256={p.name: sha256_file(p) for p in sorted(tmp.glob("*.safetensors"))},
            job_wall_time_s=round(time.perf_counter() - start, 2),
        )
        write_json(tmp / "prune_report.json", report)
    log.info("pruned %s to %.4f sparsity -> %s", model_dir, reloaded["sparsity"], out_dir)
    return report
