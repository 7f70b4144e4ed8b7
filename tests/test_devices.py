"""The GPU lock-file pool: each concurrent job gets its own GPU, and a released GPU is reused."""

import os
import sys
import threading

import pytest

from calmix.core.devices import DeviceError, compute_device


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


def test_cpu_needs_nothing(tmp_path):
    with compute_device("cpu", tmp_path) as device:
        assert device == "cpu"


def test_concurrent_jobs_get_distinct_gpus_and_release_them(two_gpus, tmp_path):
    with compute_device("cuda", tmp_path) as first:
        assert first == "cuda" and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
        os.environ["CUDA_VISIBLE_DEVICES"] = "3,5"  # as a second process would see it
        with compute_device("cuda", tmp_path):
            assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"
    with compute_device("cuda", tmp_path):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"


def test_a_job_waits_for_a_free_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    got = []
    with compute_device("cuda", tmp_path):
        waiter = threading.Thread(target=lambda: got.append(_take(tmp_path)))
        waiter.start()
        waiter.join(0.3)
        assert not got  # still waiting while the GPU is held
    waiter.join(5)
    assert got == ["0"]


def _take(lock_dir):
    with compute_device("cuda", lock_dir, poll_s=0.05):
        return "0"


def test_slurm_choice_is_respected(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    with compute_device("cuda", tmp_path) as device:
        assert device == "cuda" and os.environ["CUDA_VISIBLE_DEVICES"] == "7"
    assert not list(tmp_path.iterdir())


def test_no_gpu_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(DeviceError, match="config key 'device'"):
        with compute_device("cuda", tmp_path):
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_activation_buffers_go_back_to_the_os():
    """In a fresh interpreter: a test process's heap holds what earlier tests freed, which would serve the
    buffers below without the resident size moving."""
    import subprocess

    probe = """
import os, torch
from calmix.core.devices import return_freed_memory_to_os

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

assert return_freed_memory_to_os()
before = rss_mb()
buffers = [torch.ones(1 << 20) for _ in range(64)]  # 64 x 4 MiB, like activation batches
held = rss_mb()
del buffers
print(held - before, rss_mb() - before)
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    held, kept = map(float, result.stdout.split())
    assert held > 200 and kept < 50, (held, kept)
