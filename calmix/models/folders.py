"""Where a model loads from: a folder, or for a hub model the snapshot its fetch manifest names. Kept
apart from the fetch code, so that editing how models are fetched reruns only the fetches."""

from __future__ import annotations

from pathlib import Path


def model_folder(ref: str | Path) -> Path:
    """The folder to load a model from: ``ref`` itself, or for a hub model the snapshot folder named
    by its fetch manifest (results/models/<key>.json, a calmix.core.records.FetchManifest written by
    the fetch_model rule)."""
    ref = Path(ref)
    if ref.suffix == ".json":
        from calmix.core.io import read_json
        from calmix.core.records import FetchManifest

        manifest: FetchManifest = read_json(ref)
        return Path(manifest["path"])
    return ref
