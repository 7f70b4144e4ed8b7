"""Pruned checkpoints: prune a model with a shard's windows, save it, reload it and verify it."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from calmix.core.io import atomic_path, read_json
from calmix.core.versions import PRUNING, package_versions
from calmix.models.folders import model_folder
from calmix.models.loading import load_model, write_checkpoint_manifest
from calmix.core.records import PruneReport
from calmix.pruning import registry, targets
from calmix.pruning.capture import check_prunable_folder, in_features, model_name, weight_out_in
from calmix.pruning.driver import model_sparsity, prune_model
from calmix.pruning.masks import PruningError, nm_valid
from calmix.calibration.shards import read_shard, read_verified
from calmix.models.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

SPARSITY_TOLERANCE = 0.005


def _verify(model, layer_targets: dict[str, float], prunen: int, prunem: int) -> dict:
    """Sparsity of the reloaded checkpoint's pruned linears, each against the target its report
    records (one for all under a uniform profile, its layer's under OWL); an error if any is off, if
    one is missing, or if nothing in the decoder layers was pruned (a dense model never passes as pruned)."""
    found = model_sparsity(model)
    modules = dict(model.named_modules())
    missing = sorted(set(layer_targets) - set(found["layers"]))
    if missing:
        raise PruningError(
            f"reloaded checkpoint lacks {len(missing)} of the linear layers its report pruned, e.g. {missing[:3]}"
        )
    checked = {n: found["layers"][n] for n in layer_targets}
    # Per-row methods (Wanda) round each row's count down, so a layer may fall 1/in_features short.
    off = sorted(
        n for n, s in checked.items()
        if abs(s - layer_targets[n]) > max(SPARSITY_TOLERANCE, 1 / in_features(modules[n]))
    )
    if prunem:
        off += sorted(n for n in checked if not nm_valid(weight_out_in(modules[n]), prunen, prunem))
    if off:
        raise PruningError(
            f"reloaded checkpoint is off target{f' {prunen}:{prunem}' if prunem else ''}: {len(off)} linear layers, "
            f"e.g. {off[:3]} (sparsities {[round(checked[n], 4) for n in off[:3]]}, "
            f"layer_targets {[round(layer_targets[n], 4) for n in off[:3]]})"
        )
    if not any(checked.values()):
        raise PruningError(
            f"reloaded checkpoint of {model_name(model)} has no pruned weight in its decoder layers ({len(checked)} "
            f"linear layers checked of {len(found['layers'])}, {found['zeros']} zeros in {found['numel']} weights): "
            "nothing was pruned, and a dense model is never accepted as a pruned one"
        )
    return {"sparsity": sum(checked.values()) / max(1, len(checked)), "layers_checked": len(checked), **({"nm_valid": True} if prunem else {})}


def prune_key(
    dense_model: dict[str, Any], shard: str | Path | None, *, method: str, target: str, dtype: str, device: str,
    code: dict[str, str], skip: list[str] = (), **options: Any,
) -> str:
    """The digest a pruned checkpoint is valid for: the dense model's identity (calmix.models.folders.model_identity:
    its weights' and files' sha256, a hub model's repository and commit), the shard's sha256 (checked
    against its bytes: a missing or damaged shard stops the job here, named with its rebuild), the
    method, target, options, dtype, device, the pruning code and the versions of torch and transformers
    (calmix.core.versions). Equal keys give equal weights on a CPU, so a job whose report carries the
    key need not prune again to know them."""
    return hashlib.sha256(json.dumps({
        "dense_model": dense_model,
        "shard_sha256": read_verified(shard)[1]["sha256"] if shard is not None else None,
        "method": method, "target": target, "dtype": dtype, "device": device,
        "skip": list(skip), "options": options, "code": code, "versions": package_versions(PRUNING),
    }, sort_keys=True, default=str).encode()).hexdigest()


def current_report(path: str | Path, key: str) -> PruneReport | None:
    """The prune report at path if it was written for this key, else None (missing, older or unreadable)."""
    try:
        report = read_json(path)
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and report.get("prune_key") == key else None


def prune_checkpoint(
    model_dir: str | Path, shard: str | Path | None, out_dir: str | Path, *, method: str, target: str,
    dtype: str = "float32", device: str = "cpu", skip: list[str] = (), model_manifest: str | None = None,
    key: str | None = None, **options: Any,
) -> PruneReport:
    """Prune model_dir (with the shard's windows unless data-free) into out_dir, verified on reload.

    method is the pruned set's label ('wanda', or 'wanda-owl' with a sparsity profile: registry.label);
    target is the path label ('0.6' or '2of4'); options go to calmix.pruning.driver.prune_model. The
    checkpoint is dense safetensors with exact zeros (what transformers and vLLM load) plus
    prune_report.json. A checkpoint whose reloaded sparsity is off target, or that has nothing pruned, is an
    error, never output; an architecture calmix cannot prune is refused from its config.json, before loading.
    ``model_manifest`` is the manifest model_dir must have (``training.json`` for the world model;
    None for a user's or hub model); the shard is read once, checked against its manifest. ``key`` is
    the prune_key the report records.
    """
    start = time.perf_counter()
    sparsity, prunen, prunem = targets.parse(target)
    spec, profile = registry.parse_label(method)
    check_prunable_folder(model_folder(model_dir))  # an architecture calmix cannot prune stops here, unloaded
    windows, shard_manifest = read_shard(shard) if shard is not None else (None, None)
    model = load_model(model_dir, dtype, manifest=model_manifest)
    report = prune_model(
        model, None if windows is None else torch.from_numpy(windows), sparsity, method=spec.name, prunen=prunen,
        prunem=prunem, device=device, skip=list(skip), profile=profile.name, **options,
    )
    layer_targets = {e["name"]: e["target_sparsity"] for e in report["layers"] if not e["skipped"]}
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        load_tokenizer(model_dir).save_pretrained(str(tmp))
        verified = _verify(load_model(tmp, dtype, verify=False), layer_targets, prunen, prunem)
        report.update(
            target=targets.display(target),
            shard=str(shard) if shard is not None else None,
            shard_sha256=shard_manifest["sha256"] if shard is not None else None,
            dense_model=str(model_dir),
            verified=verified,
            prune_key=key,
            job_wall_time_s=round(time.perf_counter() - start, 2),
        )
        report = write_checkpoint_manifest(tmp, "prune_report.json", **report)
    log.info("pruned %s with %s to %s (verified sparsity %.4f) -> %s", model_dir, method, targets.display(target), verified["sparsity"], out_dir)
    return report
