import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from calmix.models.tokenizer import train_tokenizer
from calmix.world.domain import World

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = REPO / "experiments" / "world-tiny.yaml"


def snakemake_command(workdir: Path, *args: str, configfile: Path | list[Path] | None = None,
                      snakefile: Path = REPO / "Snakefile") -> list[str]:
    cmd = [SNAKEMAKE, "-s", str(snakefile), "--directory", str(workdir), "--cores", "2", *args]
    if configfile is not None:
        files = configfile if isinstance(configfile, list) else [configfile]
        cmd += ["--configfile", *map(str, files)]  # last: it takes every value that follows it
    return cmd


def snakemake(workdir: Path, *args: str, configfile: Path | list[Path] | None = None,
              snakefile: Path = REPO / "Snakefile", **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_command(workdir, *args, configfile=configfile, snakefile=snakefile),
                          capture_output=True, text=True, cwd=workdir, **kwargs)


def edit_in_place(path: Path) -> None:
    """Flip one byte and restore the mtime: damage Snakemake cannot see."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_tiny_study(workdir: Path, *args: str) -> Path:
    result = snakemake(workdir, *args, configfile=TINY)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny study run from scratch on this machine (the reference for the SLURM run)."""
    return run_tiny_study(tmp_path_factory.mktemp("first"))


@pytest.fixture(scope="session")
def second_run(tmp_path_factory) -> Path:
    """A second run from scratch of what must be deterministic: every shard, the metric table and every
    pruned checkpoint (`--until`: evaluations and the aggregates after them are left out, to save time)."""
    return run_tiny_study(tmp_path_factory.mktemp("second"), "--until", "prune", "prune_seed", "metric_table")


@pytest.fixture(scope="session")
def world_tokenizer():
    """A small byte-level BPE trained on the world, as the workflow trains it."""
    return train_tokenizer(World(0).documents("pretrain", 300, seed=0), vocab_size=400)


@pytest.fixture(scope="session")
def make_shard(world_tokenizer):
    """Tokenize texts with the world tokenizer and build one shard at path; returns its manifest."""
    from calmix.calibration.shards import build_shard, tokenize_corpus

    def make(texts, path, *, nsamples=16, seqlen=32, seed=0, sampling="windows", bos="none", tokenizer=None):
        tok = tokenizer or world_tokenizer
        docs = [{"id": f"doc:{i}", "text": t} for i, t in enumerate(texts)]
        return build_shard(
            tokenize_corpus(docs, tok, "test"), [d["id"] for d in docs], nsamples=nsamples, seqlen=seqlen,
            seed=seed, source="test", spec={"kind": "world"}, sampling=sampling, bos=bos,
            bos_id=tok.bos_token_id, eos_id=tok.eos_token_id, tokens_sha256="t" * 64,
            tokenizer_sha256="k" * 64, path=path,
        )

    return make


@pytest.fixture
def finished(tiny_run, tmp_path) -> Path:
    """A private copy of the finished tiny study, to damage or rerun."""
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    return workdir
