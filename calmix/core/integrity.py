"""Checkpoints against their manifests, and the one way every integrity error says how to rebuild.

Light on purpose (no torch): jobs that only need the check (tokenize) and `calmix-verify`, which
walks a whole study, import it without loading a deep-learning stack.
"""

from __future__ import annotations

import json
from pathlib import Path

from calmix.core.io import read_json, sha256_file

#: Manifests calmix writes beside checkpoints: calmix.pruning.checkpoints (pruned), scripts/train_world_model.py (world),
#: scripts/convert_gguf.py (a GGUF file).
CHECKPOINT_MANIFESTS = ("prune_report.json", "training.json", "conversion.json")


class IntegrityError(RuntimeError):
    """A calmix output that is missing, lacks its manifest, or differs from the sha256 it records."""


class CheckpointError(IntegrityError):
    """A checkpoint without its manifest, or whose weights differ from the sha256 the manifest records."""


def rebuild_target(path: str | Path) -> Path:
    """The output whose ``--forcerun`` rebuilds ``path``: for a pruned checkpoint (or a file in it) its prune
    report, which the job that prunes it writes whether the checkpoint is kept or temporary (no rule names
    a temporary checkpoint, so Snakemake cannot force it by its own path); else the path itself."""
    parts = Path(path).parts
    if "pruned" not in parts:
        return Path(path)
    at = parts.index("pruned")
    checkpoint = parts[at + 1: at + 6]  # {model}/{method}/{target}/{calib}/seed{seed}
    if len(checkpoint) < 5:
        return Path(path)
    return Path(*parts[:at], "prune_reports", *checkpoint[:-1], checkpoint[-1] + ".json")


def rebuild_hint(path: str | Path) -> str:
    """What to do about a damaged output: the --forcerun that rebuilds it (and what depends on it)."""
    return f"rebuild it: run snakemake again with `--forcerun {rebuild_target(path)}` (which also reruns what depends on it)"


def weights_sha256(folder: str | Path) -> dict[str, str]:
    """{file: sha256} of a save_pretrained folder's weights: what a checkpoint's manifest records."""
    return {p.name: sha256_file(p) for p in sorted(Path(folder).glob("*.safetensors"))}


def recorded_weights(folder: str | Path, manifest: str | None = None) -> dict[str, str]:
    """{file: sha256} of a checkpoint's weights as its manifest records them (``manifest``, else the first
    of CHECKPOINT_MANIFESTS it has), hashed from the files when it has none. Not a check: the job
    that loads the weights verifies them (verify_checkpoint)."""
    folder = Path(folder)
    name = manifest or next((m for m in CHECKPOINT_MANIFESTS if (folder / m).is_file()), None)
    if name is not None and (folder / name).is_file():
        return read_json(folder / name)["weights_sha256"]
    return weights_sha256(folder)


def verify_checkpoint(path: str | Path, manifest: str | None = None) -> None:
    """Refuse a calmix-written checkpoint whose weights are missing, truncated, edited or extra.

    ``manifest`` is what the consumer expects (``prune_report.json`` for a pruned checkpoint,
    ``training.json`` for the world model): a folder without it is refused, so deleting a manifest
    cannot switch the check off. With ``manifest=None`` (a user's own local model, a hub model's
    fetch manifest) a folder is checked only if it has a calmix manifest.
    """
    folder = Path(path)
    rebuild = rebuild_hint(folder)
    if manifest is None:
        found = next((folder / m for m in CHECKPOINT_MANIFESTS if (folder / m).is_file()), None)
        if found is None:
            return
    else:
        if manifest not in CHECKPOINT_MANIFESTS:
            raise ValueError(f"manifest must be one of {CHECKPOINT_MANIFESTS}, got {manifest!r}")
        if not folder.is_dir():
            raise CheckpointError(f"{folder} is missing (a calmix checkpoint with {manifest} was expected); {rebuild}")
        found = folder / manifest
    try:
        recorded = read_json(found)
    except FileNotFoundError:
        raise CheckpointError(
            f"{folder} has no {found.name} (deleted, or not a finished calmix checkpoint), so its weights "
            f"cannot be checked; {rebuild}"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{found} is not valid JSON (truncated or edited); {rebuild}") from None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("weights_sha256"), dict):
        raise CheckpointError(f"{found} records no weights_sha256 (written by an older calmix); {rebuild}")
    try:
        present = weights_sha256(folder)
    except FileNotFoundError as e:
        raise CheckpointError(f"{e.filename} disappeared while {folder} was checked; {rebuild}") from None
    for name in sorted(set(recorded["weights_sha256"]) | set(present)):
        if name not in present:
            problem = "is missing"
        elif name not in recorded["weights_sha256"]:
            problem = f"is not in {found.name}"
        elif present[name] != recorded["weights_sha256"][name]:
            problem = f"has a sha256 other than {found.name} records (truncated or edited)"
        else:
            continue
        raise CheckpointError(f"{folder / name} {problem}; {rebuild}")
