"""Calibration shards: nsamples windows of exactly seqlen tokens, never padded, recorded exactly.

Two steps. ``tokenize_corpus`` turns a source's documents into token ids with one model's tokenizer
(chat documents through its chat template), once per (model, source). ``build_shard`` samples one
seeded set of windows from those ids:

* ``windows`` (the reference SparseGPT loaders): random windows inside documents longer than a
  window (C4-style) when those hold at least nsamples x seqlen tokens, else random windows of the
  joined stream, documents separated by EOS (WikiText-style);
* ``documents``: documents in a seeded random order, one window per document from its start (longer
  ones are cut), short ones packed with the next ones after an EOS.

The BOS policy is explicit: ``none`` (no BOS), ``document`` (a BOS before every document, as
``tokenizer(text)`` gives for LLaMA-style tokenizers) or ``window`` (every window starts with BOS).
The manifest (calmix.core.records.ShardManifest) records every window as token spans
``[doc, start, end]`` of its documents (joined by EOS), the record ids of those documents, and the
sha256 of the parquet file; a token file's is calmix.core.records.TokenManifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from calmix.core.integrity import IntegrityError, rebuild_hint
from calmix.core.io import atomic_path, read_json, sha256_file, write_json
from calmix.core.records import ShardManifest, TokenManifest, TokenProvenance

log = logging.getLogger(__name__)

SAMPLING = ("windows", "documents")
BOS_POLICIES = ("none", "document", "window")


class ShardError(ValueError):
    """A corpus that cannot fill a shard; the message says how many tokens it has and needs."""


class ShardIntegrityError(ShardError, IntegrityError):
    """A shard, token file or pool that is missing, lacks its manifest, or differs from its sha256."""


# --------------------------------------------------------------------------------------------
# Tokenization (per model and source)
# --------------------------------------------------------------------------------------------


def tokenize_corpus(docs: list[dict], tokenizer, source: str) -> list[list[int]]:
    """Token ids of every document, without special tokens (sampling adds BOS/EOS by policy).

    Chat documents are rendered with the tokenizer's chat template; a template that writes its own
    BOS token keeps it (the ``document`` policy then adds none).
    """
    texts = []
    for doc in docs:
        if "messages" in doc:
            if not getattr(tokenizer, "chat_template", None):
                raise ShardError(
                    f"source {source!r} holds chat messages but the model's tokenizer has no chat template; "
                    "use a template over the record's fields instead of chat_field"
                )
            texts.append(tokenizer.apply_chat_template(doc["messages"], tokenize=False))
        else:
            texts.append(doc["text"])
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def write_tokens(
    path: str | Path, ids: list[list[int]], record_ids: list[str], manifest: TokenProvenance,
) -> TokenManifest:
    """Token ids per document (parquet) plus its manifest (.json): written atomically, hashed.
    The manifest is ``manifest`` plus the counts and the sha256 (TokenManifest)."""
    path = Path(path)
    table = pa.table({"id": pa.array(record_ids, pa.string()), "input_ids": pa.array(ids, pa.list_(pa.int32()))})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    written = cast(TokenManifest, {
        **manifest, "documents": len(ids), "tokens": int(sum(map(len, ids))), "sha256": sha256_file(path),
    })
    write_json(manifest_path(path), written)
    return written


def read_tokens(path: str | Path) -> tuple[list[np.ndarray], list[str]]:
    """(token ids per document, record id per document), after checking the file's sha256."""
    table = pq.read_table(pa.BufferReader(read_verified(path)[0]))
    ids = table.column("input_ids").combine_chunks()
    offsets = ids.offsets.to_numpy()
    values = ids.values.to_numpy(zero_copy_only=False).astype(np.int64)
    docs = [values[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    return docs, table.column("id").to_pylist()


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def sample_windows(
    doc_ids: list, nsamples: int, seqlen: int, seed: int, eos_id: int, *,
    sampling: str = "windows", bos: str = "none", bos_id: int | None = None,
) -> tuple[np.ndarray, list[list[list[int]]], str]:
    """Return (windows int64 [nsamples, seqlen], spans per window, placement).

    A window's spans ``[doc, start, end]`` index the document's tokens (with the BOS in front under
    the ``document`` policy) and are joined by EOS; under the ``window`` policy a BOS precedes them.
    ``[-1, 0, 0]`` stands for no document: the window ends with the EOS before it.
    Placement: 'documents' or 'stream' (windows mode) or 'packed' (documents mode).
    """
    if sampling not in SAMPLING:
        raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
    if bos not in BOS_POLICIES:
        raise ValueError(f"bos must be one of {BOS_POLICIES}, got {bos!r}")
    if bos != "none" and bos_id is None:
        raise ShardError(f"bos policy {bos!r} needs a BOS token, but the tokenizer has none; use bos: none")
    docs = [np.asarray(d, dtype=np.int64) for d in doc_ids]
    if bos == "document":
        docs = [d if len(d) and d[0] == bos_id else np.concatenate([[bos_id], d]) for d in docs]
    length = seqlen - 1 if bos == "window" else seqlen  # content tokens per window
    if length < 1:
        raise ShardError(f"seqlen {seqlen} leaves no room for tokens after the BOS")
    rng = np.random.default_rng(seed)
    if sampling == "documents":
        spans, placement = _packed(docs, nsamples, length, seqlen, rng), "packed"
    else:
        spans, placement = _random_windows(docs, nsamples, length, seqlen, rng)
    windows = np.stack([_assemble(docs, s, eos_id, bos_id if bos == "window" else None) for s in spans])
    assert windows.shape == (nsamples, seqlen)
    return windows, spans, placement


def _random_windows(docs, nsamples, length, seqlen, rng) -> tuple[list, str]:
    long_docs = [i for i, d in enumerate(docs) if len(d) > length]
    if sum(len(docs[i]) for i in long_docs) >= nsamples * length:
        chosen = rng.choice(long_docs, size=nsamples, replace=True)
        spots = [(int(d), int(rng.integers(0, len(docs[d]) - length + 1))) for d in chosen]
        return [[[d, o, o + length]] for d, o in spots], "documents"
    sizes = np.array([len(d) + 1 for d in docs])  # each document and the EOS after it
    total = int(sizes.sum())
    if total < nsamples * length:
        raise ShardError(
            f"corpus has {total} tokens but a shard of {nsamples} windows x {seqlen} tokens needs at least "
            f"{nsamples * length}: add documents (or lower calibration.nsamples / calibration.seqlen)"
        )
    starts = np.concatenate([[0], np.cumsum(sizes)])
    offsets = rng.integers(0, total - length + 1, size=nsamples)
    return [_stream_spans(docs, starts, int(o), length) for o in offsets], "stream"


def _stream_spans(docs, starts, offset: int, length: int) -> list[list[int]]:
    """Spans of the joined stream (doc, EOS, doc, EOS, ...) from offset for length tokens.

    A window that starts on an EOS, or ends right after one, gets an empty span there; one that
    ends with the stream's final EOS gets the span ``[-1, 0, 0]`` (an EOS with no document after it).
    """
    spans, end = [], offset + length
    d = int(np.searchsorted(starts, offset, side="right")) - 1
    while True:
        lo, hi = max(offset, starts[d]) - starts[d], min(end, starts[d] + len(docs[d])) - starts[d]
        spans.append([d, int(lo), int(max(lo, hi))])
        if end <= starts[d] + len(docs[d]):
            return spans
        d += 1  # the EOS after document d is inside the window
        if d == len(docs):
            return spans + [[-1, 0, 0]]


def _packed(docs, nsamples, length, seqlen, rng) -> list:
    order = rng.permutation(len(docs))
    spans, k = [], 0
    for _ in range(nsamples):
        window, filled = [], 0
        while filled < length:
            if k == len(order):
                usable = sum(min(len(d), length) for d in docs)
                raise ShardError(
                    f"corpus has {len(docs)} documents ({sum(map(len, docs))} tokens, {usable} usable as one window "
                    f"per document) but documents sampling needs {nsamples} windows x {seqlen} tokens; it filled "
                    f"{len(spans)}. Add documents, lower calibration.nsamples / seqlen, or use sampling: windows"
                )
            if window:
                filled += 1  # the EOS before the next document
                if filled == length:
                    window.append([-1, 0, 0])  # the window ends with that EOS
                    break
            d = int(order[k])
            k += 1
            take = min(len(docs[d]), length - filled)
            window.append([d, 0, take])
            filled += take
        spans.append(window)
    return spans


def _assemble(docs, spans, eos_id: int, bos_id: int | None) -> np.ndarray:
    parts = [] if bos_id is None else [np.array([bos_id])]
    for i, (d, lo, hi) in enumerate(spans):
        if i:
            parts.append(np.array([eos_id]))
        parts.append(docs[d][lo:hi] if d >= 0 else np.array([], dtype=np.int64))
    return np.concatenate(parts)


# --------------------------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------------------------


def build_shard(
    doc_ids: list, record_ids: list[str], *, nsamples: int, seqlen: int, seed: int, source: str,
    spec: dict[str, Any], sampling: str, bos: str, bos_id: int | None, eos_id: int, tokens_sha256: str,
    tokenizer_sha256: str, path: str | Path,
) -> ShardManifest:
    """Sample windows and write path (.parquet) plus its manifest (.json)."""
    try:
        windows, spans, placement = sample_windows(
            doc_ids, nsamples, seqlen, seed, eos_id, sampling=sampling, bos=bos, bos_id=bos_id
        )
    except ShardError as e:
        raise ShardError(f"source {source!r}: {e}") from None
    manifest = write_shard(windows, path, {
        "source": source,
        "spec": spec,
        "seed": seed,
        "nsamples": nsamples,
        "seqlen": seqlen,
        "sampling": sampling,
        "bos": bos,
        "placement": placement,
        "corpus_documents": len(doc_ids),
        "corpus_tokens": int(sum(len(d) for d in doc_ids)),
        "tokens_sha256": tokens_sha256,
        "tokenizer_sha256": tokenizer_sha256,
        "windows": spans,
        "record_ids": [[record_ids[d] if d >= 0 else None for d, _, _ in s] for s in spans],
    })
    log.info("%s: %d windows x %d tokens (%s, %s, bos %s) -> %s", source, nsamples, seqlen, sampling, placement, bos, path)
    return manifest


def write_shard(windows: np.ndarray, path: str | Path, manifest: Mapping[str, Any]) -> ShardManifest:
    """Write windows [nsamples, seqlen] as a shard (parquet) and its manifest (.json), both atomically;
    the manifest (a ShardManifest less its sha256) gains the shard's sha256. Every kind of calibration
    set ends here, so downstream rules read one format."""
    table = pa.table({
        "window": pa.array(np.arange(len(windows), dtype=np.int32)),
        "input_ids": pa.array(list(np.asarray(windows).astype(np.int32)), pa.list_(pa.int32())),
    })
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    written = cast(ShardManifest, {**manifest, "sha256": sha256_file(path)})
    write_json(manifest_path(path), written)
    return written


def manifest_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def _missing(path: str | Path) -> ShardIntegrityError:
    return ShardIntegrityError(f"{path} is missing; {rebuild_hint(path)}")


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest beside a shard, token file or pool (a ShardManifest, TokenManifest or PoolManifest:
    the caller knows which); an integrity error naming the rebuild when the file or its manifest is
    missing, unreadable, or records no sha256 (nothing to check against)."""
    if not Path(path).is_file():
        raise _missing(path)
    where = manifest_path(path)
    try:
        manifest = read_json(where)
    except FileNotFoundError:
        raise ShardIntegrityError(
            f"{path}: its manifest {where} is missing (deleted?), so it cannot be checked; {rebuild_hint(path)}"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ShardIntegrityError(
            f"{path}: its manifest {where} is not valid JSON (truncated or edited); {rebuild_hint(path)}"
        ) from None
    if not isinstance(manifest, dict) or "sha256" not in manifest:
        raise ShardIntegrityError(f"{path}: its manifest {where} records no sha256; {rebuild_hint(path)}")
    return manifest


def _mismatch(path: str | Path) -> ShardIntegrityError:
    return ShardIntegrityError(
        f"{path}: sha256 does not match its manifest {manifest_path(path)} (truncated or edited); {rebuild_hint(path)}"
    )


def verify(path: str | Path) -> dict[str, Any]:
    """Refuse a file whose sha256 differs from its manifest's (truncated, edited, half-copied), or
    that is missing or lacks its manifest; returns the manifest."""
    manifest = read_manifest(path)
    try:
        found = sha256_file(path)
    except FileNotFoundError:
        raise _missing(path) from None
    if found != manifest["sha256"]:
        raise _mismatch(path)
    return manifest


def read_verified(path: str | Path) -> tuple[pa.Buffer, dict[str, Any]]:
    """(the file's bytes, its manifest), the bytes checked against the manifest's sha256.

    Hashing exactly the bytes that are then parsed leaves no moment in which the file could change
    between the check and the read (shards, token files and pools fit in memory).

    The bytes are an Arrow-owned buffer, not Python ``bytes``: ``pq.read_table`` may drop its last
    reference to its source on an Arrow worker thread after it has returned; releasing ``bytes`` there
    needs the GIL, and a thread that asks for the GIL while the interpreter finalizes is ended by
    ``pthread_exit`` inside a noexcept C++ destructor, which aborts the finished job ("terminate called
    without an active exception"; seen in shard and select_windows jobs, 2 of 20 runs).
    """
    manifest = read_manifest(path)
    try:
        with pa.OSFile(str(path)) as file:
            data = file.read_buffer()
    except FileNotFoundError:
        raise _missing(path) from None
    if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise _mismatch(path)
    return data, manifest


def _windows(table: pa.Table) -> np.ndarray:
    return np.array(table.column("input_ids").to_pylist(), dtype=np.int64)


def read_shard(shard: str | Path) -> tuple[np.ndarray, ShardManifest]:
    """(windows int64 [nsamples, seqlen], manifest) of a shard, checked against its manifest's sha256."""
    data, manifest = read_verified(shard)
    return _windows(pq.read_table(pa.BufferReader(data), columns=["input_ids"])), cast(ShardManifest, manifest)


def load_windows(shard: str | Path) -> np.ndarray:
    """The shard's windows as int64 [nsamples, seqlen], checked against the manifest's sha256."""
    return read_shard(shard)[0]
