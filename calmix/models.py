"""Loading models, and refusing checkpoints whose weights differ from what their manifest recorded."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from calmix.hub import model_folder
from calmix.io import read_json, sha256_file, write_json

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(path: str | Path, dtype: str = "float32", verify: bool = True):
    """A causal LM in eval mode from a save_pretrained folder (or a hub model's fetch manifest).

    A calmix-written checkpoint is first checked against its manifest (verify_checkpoint).
    """
    if verify:
        verify_checkpoint(path)
    model = AutoModelForCausalLM.from_pretrained(str(model_folder(path)), dtype=DTYPES[dtype])
    return model.eval()


def parse_target(label: str) -> tuple[float, int, int]:
    """Path label of a pruning target -> (sparsity, N, M): '0.6' -> (0.6, 0, 0), '2of4' -> (0.5, 2, 4)."""
    if "of" in label:
        n, m = (int(x) for x in label.split("of"))
        return n / m, n, m
    return float(label), 0, 0


def target_label(label: str) -> str:
    """How reports name a target: '0.6' stays, '2of4' becomes '2:4'."""
    return label.replace("of", ":")


CHECKPOINT_MANIFESTS = ("prune_report.json", "training.json")  # written by calmix.checkpoints, calmix.training


class CheckpointError(RuntimeError):
    """A checkpoint's weights differ from the sha256 its manifest recorded when it was written."""


def weights_sha256(folder: str | Path) -> dict[str, str]:
    """{file: sha256} of a save_pretrained folder's weights: what a checkpoint's manifest records."""
    return {p.name: sha256_file(p) for p in sorted(Path(folder).glob("*.safetensors"))}


def write_checkpoint_manifest(folder: str | Path, name: str = "training.json", **fields) -> dict:
    """Write a checkpoint's manifest (one of CHECKPOINT_MANIFESTS): fields plus its weights' sha256."""
    manifest = {**fields, "weights_sha256": weights_sha256(folder)}
    write_json(Path(folder) / name, manifest)
    return manifest


def verify_checkpoint(path: str | Path) -> None:
    """Refuse a calmix-written checkpoint whose weights are missing, truncated, edited or extra.

    A folder without a calmix manifest (a user's own local model) is not checked, and neither is a
    hub model (a fetch manifest): the hub cache checks its own downloads.
    """
    folder = Path(path)
    manifest = next((folder / m for m in CHECKPOINT_MANIFESTS if (folder / m).is_file()), None)
    if manifest is None:
        return
    recorded = read_json(manifest)
    rebuild = f"rebuild it: run snakemake again with `--forcerun {folder}` (which also reruns what depends on it)"
    if "weights_sha256" not in recorded:
        raise CheckpointError(f"{manifest} records no weights_sha256 (written by an older calmix); {rebuild}")
    found = weights_sha256(folder)
    for name in sorted(set(recorded["weights_sha256"]) | set(found)):
        if name not in found:
            problem = "is missing"
        elif name not in recorded["weights_sha256"]:
            problem = f"is not in {manifest.name}"
        elif found[name] != recorded["weights_sha256"][name]:
            problem = f"has a sha256 other than {manifest.name} records (truncated or edited)"
        else:
            continue
        raise CheckpointError(f"{folder / name} {problem}; {rebuild}")
