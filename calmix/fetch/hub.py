"""The only place calmix talks to the Hugging Face hub, so that no job waits on retries without network.

The workflow runs every job offline (rules/common.smk sets ``HF_HUB_OFFLINE``) except the fetch rules
(hub corpora, hub models, lm-eval task data), which run on the submitting host and can be run ahead
with ``snakemake prefetch``. A fetch first probes the hub endpoint (a few seconds at most); when it is
unreachable it reads the local cache only and, failing that, raises :class:`HubUnreachable` at once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from calmix.core.integrity import weights_sha256
from calmix.core.records import FetchManifest
from calmix.models.folders import MODEL_FILES, blob_sha256

log = logging.getLogger(__name__)

#: Seconds to wait for a TCP connection to the hub before treating it as unreachable.
PROBE_TIMEOUT = 5.0

#: Set by the workflow when it (not the user) switched the hub off for compute jobs.
WORKFLOW_OFFLINE = "CALMIX_OFFLINE_BY_WORKFLOW"

_SHA = re.compile(r"^[0-9a-f]{40}$")


class HubUnreachable(RuntimeError):
    """The hub cannot be reached and the local cache does not hold what was asked for."""


class HubCacheError(RuntimeError):
    """A file in the Hugging Face cache is not what the cache says it is."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def user_offline() -> bool:
    """Whether the user asked for offline mode (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE themselves)."""
    if os.environ.get(WORKFLOW_OFFLINE):
        return False
    return any(_truthy(os.environ.get(v)) for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def unreachable_reason() -> str | None:
    """Why the hub cannot be reached now (None when it can): offline mode, DNS or connection failure.

    Probed once per endpoint and process: resolving a revision and loading the data then share it.
    """
    if user_offline():
        return "offline mode is set (HF_HUB_OFFLINE)"
    return _probe(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))


@functools.lru_cache(maxsize=None)
def _probe(endpoint: str) -> str | None:
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT).close()
    except OSError as e:
        return f"{url.hostname}:{port} is unreachable: {e}"
    return None


@contextlib.contextmanager
def offline(on: bool) -> Iterator[None]:
    """Switch huggingface_hub and datasets to (or out of) offline mode inside the block.

    Both libraries read the environment once at import, so their module constants are patched.
    """
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = on
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def load_dataset(path: str, *, remote: bool = True, **kwargs: Any):
    """``datasets.load_dataset`` that never retries against an unreachable hub.

    ``remote=False`` is for dataset folders on disk. Online, it loads normally; offline, from the
    local cache, raising :class:`HubUnreachable` if the cache does not have it.
    """
    import datasets

    if not remote:
        with offline(True):
            return datasets.load_dataset(path, **kwargs)
    reason = unreachable_reason()
    with offline(reason is not None):
        try:
            return datasets.load_dataset(path, **kwargs)
        except Exception as e:
            if reason is None:
                raise
            raise HubUnreachable(f"{reason}; cache lookup failed: {type(e).__name__}") from e


def resolve_dataset_revision(path: str, revision: str) -> str | None:
    """The commit sha a dataset revision (branch, tag or sha) points to; None when it cannot be asked."""
    if _SHA.match(revision):
        return revision
    if unreachable_reason() is not None:
        return None
    from huggingface_hub import HfApi

    sha = HfApi().dataset_info(path, revision=revision).sha
    log.warning("dataset %s: revision %r is not pinned; it resolves to %s today (pin that sha)", path, revision, sha)
    return sha


def download_model(repo: str, revision: str) -> tuple[Path, str]:
    """Snapshot a model repository into the Hugging Face cache; returns (local folder, commit sha)."""
    from huggingface_hub import snapshot_download

    reason = unreachable_reason()
    with offline(reason is not None):
        try:
            folder = snapshot_download(
                repo, revision=revision, allow_patterns=MODEL_FILES, local_files_only=reason is not None
            )
        except Exception as e:
            if reason is None:
                raise
            raise HubUnreachable(
                f"model {repo!r} (revision {revision}) is not in the local Hugging Face cache and {reason}. "
                "Run `snakemake prefetch --configfile <your config>` on a machine with network access first "
                "(or point HF_HOME at a cache that holds it)."
            ) from e
    folder = Path(folder)
    return folder, folder.name  # snapshot folders are named by the commit sha


def snapshot_weights(folder: str | Path) -> dict[str, str]:
    """{file: sha256} of a snapshot's weights, hashed once when fetched (what every job's keys then read
    from the fetch manifest). huggingface_hub names an LFS file's blob by the sha256 the hub gave it but
    does not check the bytes it wrote against it, so they are checked here."""
    weights = weights_sha256(folder)
    for name, sha in weights.items():
        named = blob_sha256(Path(folder) / name)
        if named not in (None, sha):
            raise HubCacheError(
                f"{Path(folder) / name} has sha256 {sha}, not the {named} its blob in the Hugging Face cache is "
                "named by (a damaged download): delete that blob and fetch again"
            )
    return weights


def fetch_model(repo: str, revision: str) -> FetchManifest:
    """Snapshot a hub model into the Hugging Face cache: its fetch manifest (results/models/{model}.json),
    which names the snapshot, the commit and the weights' sha256 (calmix.models.folders.model_identity)."""
    folder, sha = download_model(repo, revision)
    return {
        "repo": repo,
        "revision": revision,
        "resolved_revision": sha,
        "path": str(folder),
        "bytes": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()),
        "weights_sha256": snapshot_weights(folder),
    }


def download_file(repo: str, filename: str, revision: str) -> tuple[Path, str]:
    """One file of a model repository (a GGUF file) into the Hugging Face cache; returns (path, commit sha)."""
    from huggingface_hub import hf_hub_download

    reason = unreachable_reason()
    with offline(reason is not None):
        try:
            path = Path(hf_hub_download(repo, filename, revision=revision, local_files_only=reason is not None))
        except Exception as e:
            if reason is None:
                raise
            raise HubUnreachable(
                f"{filename} of {repo!r} (revision {revision}) is not in the local Hugging Face cache and {reason}. "
                "Run `snakemake prefetch --configfile <your config>` on a machine with network access first."
            ) from e
    return path, path.parent.name  # files sit in snapshots/<commit sha>/
