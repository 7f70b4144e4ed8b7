"""Calibration shards: exact counts and lengths, no padding, deterministic bytes, a full manifest."""

import json

import numpy as np
import pytest

from calmix.corpora import CorpusError, load_documents
from calmix.shards import ShardError, build_shard, load_windows, sample_windows
from calmix.world import World


def _build(tmp_path, tok, docs, seed=0, nsamples=16, seqlen=32, name="a"):
    path = tmp_path / f"{name}.parquet"
    manifest = build_shard(
        docs, tok, nsamples=nsamples, seqlen=seqlen, seed=seed, source="web", spec={"kind": "world"},
        corpus_sha256="c" * 64, tokenizer_sha256="t" * 64, path=path,
    )
    return path, manifest


def test_windows_are_exact_unpadded_and_taken_from_the_corpus(tmp_path, world_tokenizer):
    docs = World(0).documents("equations", 100, seed=1)  # all documents shorter than a window
    path, manifest = _build(tmp_path, world_tokenizer, docs, seqlen=128)
    windows = load_windows(path)
    assert windows.shape == (16, 128)
    stream = [t for ids in world_tokenizer(docs, add_special_tokens=False)["input_ids"] for t in (*ids, world_tokenizer.eos_token_id)]
    for (doc, offset), row in zip(manifest["windows"], windows):
        assert doc == -1 and stream[offset:offset + 128] == row.tolist()
    assert manifest["placement"] == "stream"
    assert world_tokenizer.pad_token_id is None or world_tokenizer.pad_token_id not in windows


def test_long_documents_give_in_document_windows(tmp_path, world_tokenizer):
    docs = ["\n".join(World(0).documents("encyclopedia", 30, seed=1))] * 3
    _, manifest = _build(tmp_path, world_tokenizer, docs, nsamples=8, seqlen=64)
    assert manifest["placement"] == "documents"
    assert all(d in (0, 1, 2) for d, _ in manifest["windows"])


def test_same_seed_same_bytes_other_seed_other_windows(tmp_path, world_tokenizer):
    docs = World(0).documents("code", 50, seed=1)
    a, ma = _build(tmp_path, world_tokenizer, docs, name="a")
    b, mb = _build(tmp_path, world_tokenizer, docs, name="b")
    c, mc = _build(tmp_path, world_tokenizer, docs, seed=1, name="c")
    assert a.read_bytes() == b.read_bytes() and ma["sha256"] == mb["sha256"]
    assert ma["windows"] != mc["windows"]


def test_manifest_records_what_made_the_shard(tmp_path, world_tokenizer):
    path, _ = _build(tmp_path, world_tokenizer, World(0).documents("qa", 50, seed=1))
    manifest = json.loads(path.with_suffix(".json").read_text())
    for key in ("source", "spec", "seed", "nsamples", "seqlen", "tokenizer_sha256", "corpus_sha256", "windows", "sha256"):
        assert key in manifest


def test_tampered_shard_is_refused(tmp_path, world_tokenizer):
    path, _ = _build(tmp_path, world_tokenizer, World(0).documents("qa", 50, seed=1))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ShardError, match="sha256"):
        load_windows(path)


def test_corpus_too_small_says_how_many_tokens(world_tokenizer):
    with pytest.raises(ShardError, match=r"has \d+ tokens .* needs at least 3200"):
        sample_windows([[1, 2, 3]] * 5, nsamples=100, seqlen=32, seed=0, eos_id=0)


def test_local_sources(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("first doc\nline two\n\nsecond doc\n")
    assert load_documents("t", {"kind": "local", "path": str(txt)}) == ["first doc\nline two", "second doc"]
    jl = tmp_path / "a.jsonl"
    jl.write_text('{"content": "x"}\n{"content": "y"}\n')
    assert load_documents("j", {"kind": "local", "path": str(jl), "field": "content"}) == ["x", "y"]
    with pytest.raises(CorpusError, match=r"no field 'text'; fields present: \['content'\]"):
        load_documents("j", {"kind": "local", "path": str(jl), "field": "text"})
    with pytest.raises(CorpusError, match="cannot read"):
        load_documents("m", {"kind": "local", "path": str(tmp_path / "missing.txt")})
