"""Where a model loads from, and what it is: a folder, or for a hub model the snapshot its fetch
manifest names. Kept apart from the fetch code, so that editing how models are fetched reruns only
the fetches."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

from calmix.core.integrity import CHECKPOINT_MANIFESTS, IntegrityError, rebuild_hint, recorded_weights
from calmix.core.io import read_json, sha256_file

#: Files of a model that loading reads (weights, configs, tokenizer, chat template): what a hub fetch
#: downloads (calmix.fetch.hub) and, with a user's own folder's pytorch_model.bin, what an identity digests.
MODEL_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.tiktoken", "*.txt", "*.jinja"]

_SHA256 = re.compile(r"[0-9a-f]{64}")


def model_folder(ref: str | Path) -> Path:
    """The folder to load a model from: ``ref`` itself, or for a hub model the snapshot folder named
    by its fetch manifest (results/models/<key>.json, a calmix.core.records.FetchManifest written by
    the fetch_model rule)."""
    ref = Path(ref)
    if ref.suffix == ".json":
        from calmix.core.records import FetchManifest

        manifest: FetchManifest = read_json(ref)
        return Path(manifest["path"])
    return ref


def blob_sha256(path: str | Path) -> str | None:
    """The sha256 the Hugging Face cache names a snapshot file's blob by, or None: an LFS file (weights)
    links to ``blobs/<sha256 of its content>``; a small file's blob is named by its git sha1 instead."""
    path = Path(path)
    if not path.is_symlink():
        return None
    name = path.resolve().name
    return name if _SHA256.fullmatch(name) else None


def model_identity(ref: str | Path, manifest: str | None = None) -> dict[str, Any]:
    """What a dense model is, for the keys that decide reruns (the prune key, the evaluation key):
    ``weights`` ({file: sha256}, as a calmix manifest records them, else hashed), ``files`` ({file:
    sha256} of the other files loading reads: config, tokenizer, chat template), and for a hub model
    its ``repo`` and ``revision`` (the commit sha it resolved to).

    ``ref`` is a folder (the world model's, with ``training.json``; a GGUF file's, with
    ``conversion.json``; a user's own) or a hub model's fetch manifest, whose weights' sha256 were
    hashed when it was fetched (calmix.fetch.hub.fetch_model) and are checked here against the
    snapshot's file names and, where the cache names a blob by it, its sha256.
    """
    ref = Path(ref)
    identity: dict[str, Any] = {}
    if ref.suffix == ".json":
        fetched = read_json(ref)
        if not isinstance(fetched.get("weights_sha256"), dict):
            raise IntegrityError(f"{ref} records no weights_sha256 (written by an older calmix); {rebuild_hint(ref)}")
        folder, weights = Path(fetched["path"]), fetched["weights_sha256"]
        present = sorted(p.name for p in folder.glob("*.safetensors"))
        if present != sorted(weights):
            raise IntegrityError(f"the snapshot {folder} holds the weights {present}, not the {sorted(weights)} that "
                                 f"{ref} records (the Hugging Face cache changed); {rebuild_hint(ref)}")
        for name, sha in weights.items():
            if blob_sha256(folder / name) not in (None, sha):
                raise IntegrityError(f"{folder / name} links to a blob other than the sha256 {ref} records; "
                                     f"{rebuild_hint(ref)}")
        identity = {"repo": fetched["repo"], "revision": fetched["resolved_revision"]}
    else:
        folder, weights = ref, recorded_weights(ref, manifest)
    files = {
        p.name: sha256_file(p) for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix != ".safetensors" and p.name not in CHECKPOINT_MANIFESTS
        and any(fnmatch.fnmatch(p.name, pattern) for pattern in [*MODEL_FILES, "*.bin"])
    }
    return {**identity, "weights": weights, "files": files}
