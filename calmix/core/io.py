"""Atomic file output and hashing: a killed job never leaves a file that looks finished.

Nothing here writes a timestamp, so equal inputs give equal bytes."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of path (file or folder); rename it onto path only on success.

    Siblings left by a writer that was killed (SIGKILL skips the cleanup below) are removed first:
    a path has one writer at a time (Snakemake runs one job per output and locks the directory).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")
    return Path(path)


def write_table(df, stem: str | Path) -> tuple[Path, Path]:
    """Write ``stem.csv`` (for people) and ``stem.parquet`` (typed, for code), both atomically.

    The suffixes are appended to ``stem``, so "retention_0.6" stays intact.
    """
    paths = []
    for suffix, write in ((".csv", df.to_csv), (".parquet", df.to_parquet)):
        path = Path(f"{stem}{suffix}")
        with atomic_path(path) as tmp:
            write(tmp, index=False)
        paths.append(path)
    return paths[0], paths[1]
