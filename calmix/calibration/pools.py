"""Candidate pools of self-generated calibration data: the expensive, cached half of a builder.

A pool is one parquet file (candidate, input_ids, one column per score) and a manifest (.json) with
how it was generated and its sha256, like a shard's. The selection rule reads it back, checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from calmix.core.io import atomic_path, sha256_file, write_json
from calmix.calibration.shards import manifest_path, read_verified


def write_pool(pool: np.ndarray, scores: dict[str, np.ndarray], path: str | Path, manifest: dict) -> dict:
    """Write the candidates [n, seqlen] and their scores atomically; the manifest gains the sha256."""
    columns = {
        "candidate": pa.array(np.arange(len(pool), dtype=np.int32)),
        "input_ids": pa.array(list(np.asarray(pool).astype(np.int32)), pa.list_(pa.int32())),
        **{name: pa.array(np.asarray(values, float)) for name, values in scores.items()},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns), tmp, compression="zstd")
    manifest = {**manifest, "scores": sorted(scores), "sha256": sha256_file(path)}
    write_json(manifest_path(path), manifest)
    return manifest


def read_pool(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """(candidates int64 [n, seqlen], scores, manifest), after checking the file's sha256 (an
    integrity error naming the rebuild when the pool or its manifest is missing or differs)."""
    data, manifest = read_verified(path)
    table = pq.read_table(pa.BufferReader(data))
    pool = np.array(table.column("input_ids").to_pylist(), dtype=np.int64)
    return pool, {name: table.column(name).to_numpy() for name in manifest["scores"]}, manifest
