"""One checkpoint, every capability dimension: one process and one model load, one record per dimension.

Starting Python, torch, transformers and lm-eval costs about five seconds a process, more than pruning
and scoring the built-in world's model. So the workflow runs one job per pruned checkpoint, which
prunes it and scores every dimension (calmix.evaluation.pruned), and one for the dense model
(evaluate_checkpoint), while each dimension keeps its own record (``{dimension}.json`` and
``{dimension}.items.parquet``) and its own reruns: a record carries ``evaluation_key``, the digest of
everything its numbers depend on (the weights' sha256, the dense model's identity, the dimension's
tasks and settings and task definitions, its data files' sha256, the evaluating code, the versions of
torch, transformers and lm-eval, dtype and device). When a
job reruns (something changed for some dimension, or a record was deleted), a dimension whose record
and per-item file are there with the same key is kept as it is; only the others are scored, and the
model is loaded only if one is. Pruning has its own key the same way (calmix.pruning.checkpoints.prune_key,
in the prune report). The rules mark these outputs ``update()``, so Snakemake leaves them in place for
this (and puts them back if the job fails).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from calmix.core.integrity import recorded_weights, verify_checkpoint
from calmix.core.io import read_json, sha256_file, write_json
from calmix.core.versions import EVALUATION, package_versions
from calmix.evaluation.items import write_items
from calmix.models.folders import model_folder, model_identity

log = logging.getLogger(__name__)


def evaluation_context(context: dict[str, Any], dense_model: dict[str, Any], *, dtype: str, device: str) -> dict[str, Any]:
    """What every dimension's key shares: the caller's ``context`` (the evaluating code), the dense
    model's identity (calmix.models.folders.model_identity; for a pruned checkpoint the model it was
    pruned from, whose config and tokenizer it carries), the versions of torch, transformers and
    lm-eval this job runs (calmix.core.versions), dtype and device."""
    return {**context, "dense_model": dense_model, "versions": package_versions(EVALUATION), "dtype": dtype,
            "device": device}


def evaluation_key(weights: dict[str, str], dimension: dict[str, Any], data: list[str | Path], context: dict[str, Any]) -> str:
    """The digest one dimension's record is valid for: the weights, the dimension's settings, the
    sha256 of each data file it reads, and the context every dimension shares (evaluation_context)."""
    return hashlib.sha256(json.dumps({
        "weights": weights,
        "dimension": dimension,
        "data": {str(p): sha256_file(p) for p in sorted(map(str, data))},
        "context": context,
    }, sort_keys=True, default=str).encode()).hexdigest()


def _current(scores: Path, per_item: Path, key: str) -> bool:
    if not (scores.is_file() and per_item.is_file()):
        return False
    try:
        return read_json(scores).get("evaluation_key") == key
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def stale_dimensions(
    weights: dict[str, str],
    dimensions: dict[str, dict[str, Any]],
    outputs: dict[str, tuple[str | Path, str | Path]],
    *,
    data: dict[str, list[str | Path]],
    context: dict[str, Any],
) -> dict[str, str]:
    """{dimension: evaluation key} of the dimensions whose record is missing or was made for another key."""
    stale = {}
    for name, spec in dimensions.items():
        key = evaluation_key(weights, spec, data.get(name, []), context)
        if _current(*map(Path, outputs[name]), key):
            log.info("dimension %s: record %s is current (evaluation key %s); kept", name, outputs[name][0], key[:12])
        else:
            stale[name] = key
    return stale


def evaluate_checkpoint(
    model_path: str | Path,
    dimensions: dict[str, dict[str, Any]],
    outputs: dict[str, tuple[str | Path, str | Path]],
    *,
    data: dict[str, list[str | Path]],
    identity: dict[str, Any],
    context: dict[str, Any],
    task_dir: Path,
    data_root: Path,
    dtype: str = "float32",
    device: str = "cpu",
    model_manifest: str | None = None,
    dense_model: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Score the checkpoint on every dimension whose record is not current; {dimension: "kept" | "scored"}.

    ``dimensions`` maps a dimension to ``{"tasks": [...], "harness": {...}, ...}`` (harness: keyword
    arguments of calmix.evaluation.harness.evaluate; the other keys, such as task definitions' digests,
    only enter the key); ``outputs`` to its (record, per-item file) paths; ``data`` to the files it reads;
    ``identity`` is what every record starts with (model, method, sparsity, calib, seed). The
    checkpoint is checked against its manifest where it has one; its weights enter the key as the
    manifest records them (a rebuilt temporary checkpoint with the same weights keeps its records).
    ``dense_model`` is the identity of the model a pruned checkpoint was pruned from; None: the
    checkpoint is the dense model (a folder or a hub model's fetch manifest), identified here.
    """
    from calmix.evaluation.harness import evaluate, load_lm

    verify_checkpoint(model_folder(model_path), model_manifest)
    if dense_model is None:
        dense_model = model_identity(model_path, model_manifest)
        weights = dense_model["weights"]
    else:
        weights = recorded_weights(model_path, model_manifest)
    context = evaluation_context(context, dense_model, dtype=dtype, device=device)
    stale = stale_dimensions(weights, dimensions, outputs, data=data, context=context)
    lm = None
    for name, key in stale.items():
        harness = dict(dimensions[name]["harness"])
        if lm is None:
            lm = load_lm(model_path, device=device, batch_size=harness.get("batch_size", 32), dtype=dtype,
                         model_manifest=model_manifest)
        result = evaluate(model_path, dimensions[name]["tasks"], task_dir=task_dir, data_root=data_root, dtype=dtype,
                          device=device, dimension=name, model_manifest=model_manifest, lm=lm, **harness)
        scores, per_item = outputs[name]
        write_items(result.pop("items"), per_item)
        write_json(scores, {**identity, "dimension": name, "evaluation_key": key, "weights_sha256": weights, **result})
    return {name: "scored" if name in stale else "kept" for name in dimensions}
