"""Calibration shards: nsamples windows of exactly seqlen tokens, never padded, recorded exactly.

Sampling follows the reference SparseGPT loaders: random windows inside documents longer than
seqlen (C4-style) when those documents hold at least nsamples x seqlen tokens, otherwise random
windows of the joined token stream, documents separated by EOS (WikiText-style). The choice, the
seed and every window's (document, offset) go into the manifest, with the sha256 of the parquet file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from calmix.io import atomic_path, read_json, sha256_file, write_json

log = logging.getLogger(__name__)


class ShardError(ValueError):
    """A corpus that cannot fill a shard; the message says how many tokens it has and needs."""


def sample_windows(doc_ids: list[list[int]], nsamples: int, seqlen: int, seed: int, eos_id: int) -> tuple[np.ndarray, list[tuple[int, int]], str]:
    """Return (windows int32 [nsamples, seqlen], [(doc, offset)], placement).

    doc is -1 for windows of the joined stream, whose offset is then a stream position.
    """
    rng = np.random.default_rng(seed)
    long_docs = [i for i, ids in enumerate(doc_ids) if len(ids) > seqlen]
    if sum(len(doc_ids[i]) for i in long_docs) >= nsamples * seqlen:
        docs = rng.choice(long_docs, size=nsamples, replace=True)
        spots = [(int(d), int(rng.integers(0, len(doc_ids[d]) - seqlen + 1))) for d in docs]
        windows = np.array([doc_ids[d][o:o + seqlen] for d, o in spots], dtype=np.int32)
        return windows, spots, "documents"
    stream = np.fromiter((t for ids in doc_ids for t in (*ids, eos_id)), dtype=np.int32)
    if len(stream) < nsamples * seqlen:
        raise ShardError(
            f"corpus has {len(stream)} tokens but a shard of {nsamples} windows x {seqlen} tokens needs at least "
            f"{nsamples * seqlen}: add documents (or lower calibration.nsamples / calibration.seqlen)"
        )
    offsets = rng.integers(0, len(stream) - seqlen + 1, size=nsamples)
    windows = np.stack([stream[o:o + seqlen] for o in offsets])
    return windows, [(-1, int(o)) for o in offsets], "stream"


def build_shard(
    docs: list[str], tokenizer, *, nsamples: int, seqlen: int, seed: int, source: str, spec: dict,
    corpus_sha256: str, tokenizer_sha256: str, path: str | Path,
) -> dict:
    """Tokenize docs, sample windows and write path (.parquet) plus its manifest (.json)."""
    doc_ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    try:
        windows, spots, placement = sample_windows(doc_ids, nsamples, seqlen, seed, tokenizer.eos_token_id)
    except ShardError as e:
        raise ShardError(f"source {source!r}: {e}") from None
    table = pa.table({
        "window": pa.array(np.arange(nsamples, dtype=np.int32)),
        "doc": pa.array([d for d, _ in spots], pa.int32()),
        "offset": pa.array([o for _, o in spots], pa.int64()),
        "input_ids": pa.array(list(windows), pa.list_(pa.int32())),
    })
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    manifest = {
        "source": source,
        "spec": spec,
        "seed": seed,
        "nsamples": nsamples,
        "seqlen": seqlen,
        "sampling": "windows",
        "placement": placement,
        "corpus_documents": len(docs),
        "corpus_tokens": int(sum(len(ids) for ids in doc_ids)),
        "corpus_sha256": corpus_sha256,
        "tokenizer_sha256": tokenizer_sha256,
        "windows": [[d, o] for d, o in spots],
        "sha256": sha256_file(path),
    }
    write_json(manifest_path(path), manifest)
    log.info("%s: %d windows x %d tokens (%s) -> %s", source, nsamples, seqlen, placement, path)
    return manifest


def manifest_path(shard: str | Path) -> Path:
    return Path(shard).with_suffix(".json")


def load_windows(shard: str | Path, verify: bool = True) -> np.ndarray:
    """The shard's windows as int64 [nsamples, seqlen]; with verify, check the manifest's sha256."""
    if verify:
        expected = read_json(manifest_path(shard))["sha256"]
        if sha256_file(shard) != expected:
            raise ShardError(f"{shard}: sha256 does not match its manifest; delete it and rerun to rebuild it")
    column = pq.read_table(shard, columns=["input_ids"]).column("input_ids")
    return np.array(column.to_pylist(), dtype=np.int64)
