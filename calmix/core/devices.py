"""Which device a job computes on: the CPU, or one GPU taken from a lock-file pool.

Snakemake limits how many `gpu=1` jobs run at once but never says which GPU a job should use, so
each GPU job takes the first free GPU by holding an exclusive flock on a per-GPU lock file and
pins itself to it with CUDA_VISIBLE_DEVICES before CUDA starts. The kernel drops a flock when its
process dies, so a killed job never leaves a GPU marked busy. Under SLURM the scheduler has already
chosen the GPU (it sets CUDA_VISIBLE_DEVICES), and the pool steps aside.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


class DeviceError(RuntimeError):
    """A job configured for a GPU found none."""


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES if set, otherwise what nvidia-smi lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.split() if out.returncode == 0 else []


def default_lock_dir() -> Path:
    return Path(os.environ.get("CALMIX_GPU_LOCK_DIR", Path(tempfile.gettempdir()) / f"calmix-gpu-locks-{os.getuid()}"))


@contextmanager
def compute_device(kind: str, lock_dir: Path | None = None, poll_s: float = 2.0) -> Iterator[str]:
    """Yield the torch device string for this job ("cpu" or "cuda"), holding a GPU while inside.

    kind is the config's `device`: "cpu" needs nothing; "cuda" takes a free GPU from the pool.
    """
    if kind == "cpu":
        yield "cpu"
        return
    if os.environ.get("SLURM_JOB_ID") and os.environ.get("CUDA_VISIBLE_DEVICES"):
        yield "cuda"
        return
    gpus = visible_gpus()
    if not gpus:
        raise DeviceError(
            "config key 'device' is 'cuda' but no GPU is visible (nvidia-smi lists none and "
            "CUDA_VISIBLE_DEVICES is empty); set device: cpu or run on a GPU machine"
        )
    lock_dir = lock_dir or default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for gpu in gpus:
            handle = open(lock_dir / f"gpu{gpu}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            previous = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            log.info("using GPU %s (lock %s)", gpu, handle.name)
            try:
                yield "cuda"
            finally:
                if previous is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = previous
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        if not waited:
            log.warning("all GPUs %s are taken by other jobs; waiting (is --resources gpu above the GPU count?)", gpus)
            waited = True
        time.sleep(poll_s)


#: Allocations at least this large go straight to mmap, so freeing them returns memory to the OS.
MMAP_THRESHOLD = 1 << 20


def return_freed_memory_to_os() -> bool:
    """Make glibc hand large freed buffers back to the OS at once (True if it could be set).

    glibc raises its mmap threshold each time a large mmapped block is freed, after which buffers of
    a few MB (activation batches) come from its heap and stay there when freed: a layer-by-layer
    pruner's RSS then grows by about a layer's activation traffic per layer, none of it in use. A
    fixed threshold (mallopt M_MMAP_THRESHOLD, which also stops the adjustment) keeps the RSS equal
    to what is in use. No effect off glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, MMAP_THRESHOLD))  # -3 = M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False
