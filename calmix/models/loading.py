"""Loading models, and refusing checkpoints whose weights differ from what their manifest recorded."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, cast, overload

import torch
from transformers import AutoModelForCausalLM

from calmix.models.folders import model_folder
# The checks live in calmix.core.integrity (no torch, for jobs and calmix-verify); named here for loaders.
from calmix.core.integrity import verify_checkpoint, weights_sha256
from calmix.core.io import write_json
from calmix.core.records import CheckpointManifest, PruneReport, TrainingManifest

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(path: str | Path, dtype: str = "float32", verify: bool = True, manifest: str | None = None):
    """A causal LM in eval mode from a save_pretrained folder (or a hub model's fetch manifest).

    A calmix-written checkpoint is first checked against its manifest (verify_checkpoint); the
    consumer names the manifest it expects (``prune_report.json``, ``training.json``), so a folder
    that lacks it is refused instead of loaded unchecked.
    """
    if verify:
        verify_checkpoint(path, manifest)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_folder(path)), dtype=DTYPES[dtype])
    except OSError:
        if verify:
            verify_checkpoint(path, manifest)  # damaged while it loaded: say so, with the rebuild
        raise
    return model.eval()


@overload
def write_checkpoint_manifest(
    folder: str | Path, name: Literal["training.json"] = ..., **fields: Any,
) -> TrainingManifest: ...


@overload
def write_checkpoint_manifest(folder: str | Path, name: Literal["prune_report.json"], **fields: Any) -> PruneReport: ...


@overload
def write_checkpoint_manifest(folder: str | Path, name: str, **fields: Any) -> CheckpointManifest: ...


def write_checkpoint_manifest(folder: str | Path, name: str = "training.json", **fields: Any) -> CheckpointManifest:
    """Write a checkpoint's manifest (one of CHECKPOINT_MANIFESTS): fields plus its weights' sha256.

    ``training.json`` is a TrainingManifest (fields: train_model's summary), ``prune_report.json`` a
    PruneReport (fields: prune_checkpoint's report), both in calmix.core.records."""
    manifest = cast(CheckpointManifest, {**fields, "weights_sha256": weights_sha256(folder)})
    write_json(Path(folder) / name, manifest)
    return manifest
