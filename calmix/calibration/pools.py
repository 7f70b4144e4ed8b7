"""Candidate pools of self-generated calibration data: the expensive, cached half of a builder.

A pool is one parquet file (candidate, input_ids, one column per score) and a manifest (.json,
calmix.core.records.PoolManifest) with how it was generated and its sha256, like a shard's. The
selection rule reads it back, checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from calmix.core.io import atomic_path, sha256_file, write_json
from calmix.core.records import PoolManifest
from calmix.calibration.shards import manifest_path, read_verified


def write_pool(
    pool: np.ndarray, scores: dict[str, np.ndarray], path: str | Path, manifest: Mapping[str, Any],
) -> PoolManifest:
    """Write the candidates [n, seqlen] and their scores atomically; the manifest (a PoolManifest less
    its scores and sha256) gains the score names and the sha256."""
    columns = {
        "candidate": pa.array(np.arange(len(pool), dtype=np.int32)),
        "input_ids": pa.array(list(np.asarray(pool).astype(np.int32)), pa.list_(pa.int32())),
        **{name: pa.array(np.asarray(values, float)) for name, values in scores.items()},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns), tmp, compression="zstd")
    written = cast(PoolManifest, {**manifest, "scores": sorted(scores), "sha256": sha256_file(path)})
    write_json(manifest_path(path), written)
    return written


def read_pool(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray], PoolManifest]:
    """(candidates int64 [n, seqlen], scores, manifest), after checking the file's sha256 (an
    integrity error naming the rebuild when the pool or its manifest is missing or differs)."""
    data, found = read_verified(path)
    manifest = cast(PoolManifest, found)
    table = pq.read_table(pa.BufferReader(data))
    pool = np.array(table.column("input_ids").to_pylist(), dtype=np.int64)
    return pool, {name: table.column(name).to_numpy() for name in manifest["scores"]}, manifest
