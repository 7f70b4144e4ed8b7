"""Calibration shards: both sampling modes and every BOS policy give exact, unpadded, seeded windows
that the manifest's spans and record ids reproduce token for token."""

import json

import numpy as np
import pytest

from calmix.calibration.shards import ShardError, load_windows, read_tokens, sample_windows, tokenize_corpus, write_tokens
from calmix.world.domain import World


def _ids(tok, texts):
    return tok(texts, add_special_tokens=False)["input_ids"]


def _rebuild(doc_ids, spans, eos, bos_first=None, bos_doc=None):
    """A window from its manifest spans, independently of calmix's assembly."""
    docs = [list(d) if bos_doc is None or (d and d[0] == bos_doc) else [bos_doc, *d] for d in doc_ids]
    out = [] if bos_first is None else [bos_first]
    for i, (d, lo, hi) in enumerate(spans):
        out += ([eos] if i else []) + (docs[d][lo:hi] if d >= 0 else [])
    return out


@pytest.mark.parametrize("sampling", ["windows", "documents"])
@pytest.mark.parametrize("bos", ["none", "document", "window"])
@pytest.mark.parametrize("generator", ["equations", "encyclopedia"])  # short documents / long ones
def test_windows_are_exact_unpadded_and_reproduced_by_the_manifest(tmp_path, world_tokenizer, make_shard, sampling, bos, generator):
    tok = world_tokenizer
    texts = World(0).documents(generator, 120, seed=1)
    if generator == "equations":
        texts = [line for doc in texts for line in doc.splitlines() if line.strip()]  # all shorter than a window
    else:
        texts = ["\n".join(texts[i : i + 10]) for i in range(0, 120, 10)]  # 12 long documents
    path = tmp_path / "s.parquet"
    manifest = make_shard(texts, path, nsamples=8, seqlen=48, sampling=sampling, bos=bos)
    windows = load_windows(path)
    assert windows.shape == (8, 48) and manifest["sampling"] == sampling and manifest["bos"] == bos
    assert tok.pad_token_id is None or tok.pad_token_id not in windows
    doc_ids = _ids(tok, texts)
    for spans, ids, row in zip(manifest["windows"], manifest["record_ids"], windows):
        want = _rebuild(doc_ids, spans, tok.eos_token_id, tok.bos_token_id if bos == "window" else None,
                        tok.bos_token_id if bos == "document" else None)
        assert row.tolist() == want
        assert ids == [f"doc:{d}" if d >= 0 else None for d, _, _ in spans]
    first = windows[:, 0]
    if bos == "window":
        assert (first == tok.bos_token_id).all()
    if bos == "none":
        assert tok.bos_token_id not in windows
    if sampling == "documents":
        starts = [s[0][1] for s in manifest["windows"]]
        assert starts == [0] * 8 and manifest["placement"] == "packed"  # every window opens a document
        used = [d for s in manifest["windows"] for d, _, _ in s if d >= 0]
        assert len(used) == len(set(used))  # no document twice
        if bos == "document":
            assert (first == tok.bos_token_id).all()
    else:
        assert manifest["placement"] == ("documents" if generator == "encyclopedia" else "stream")


def test_documents_mode_packs_short_documents_after_an_eos(world_tokenizer):
    docs = [[5] * 10, [6] * 10, [7] * 30, [8] * 4]
    windows, spans, _ = sample_windows(docs, 2, 16, seed=0, eos_id=1, sampling="documents")
    for row, s in zip(windows, spans):
        assert s[0][1] == 0 and all(lo == 0 for _, lo, _ in s)
        if len(s) > 1:
            cut = s[0][2]
            assert row[cut] == 1  # the EOS between packed documents
    assert sum(len(s) for s in spans) <= 4


def test_same_seed_same_bytes_other_seed_other_windows(tmp_path, make_shard):
    texts = World(0).documents("code", 50, seed=1)
    for sampling in ("windows", "documents"):
        ma = make_shard(texts, tmp_path / "a.parquet", sampling=sampling, nsamples=8)
        a = (tmp_path / "a.parquet").read_bytes()
        mb = make_shard(texts, tmp_path / "b.parquet", sampling=sampling, nsamples=8)
        mc = make_shard(texts, tmp_path / "c.parquet", sampling=sampling, nsamples=8, seed=1)
        assert a == (tmp_path / "b.parquet").read_bytes() and ma == {**mb, "sha256": ma["sha256"]}
        assert ma["windows"] != mc["windows"]


def test_manifest_records_what_made_the_shard(tmp_path, make_shard):
    make_shard(World(0).documents("qa", 50, seed=1), tmp_path / "s.parquet")
    manifest = json.loads((tmp_path / "s.json").read_text())
    for key in ("source", "spec", "seed", "nsamples", "seqlen", "sampling", "bos", "placement", "tokenizer_sha256",
                "tokens_sha256", "windows", "record_ids", "sha256"):
        assert key in manifest


def test_tampered_shard_is_refused(tmp_path, make_shard):
    path = tmp_path / "s.parquet"
    make_shard(World(0).documents("qa", 50, seed=1), path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ShardError, match=r"sha256 does not match .*--forcerun "):
        load_windows(path)


def test_corpus_too_small_says_how_many_tokens_it_has_and_needs():
    with pytest.raises(ShardError, match=r"has 20 tokens but a shard of 100 windows x 32 tokens needs at least 3200"):
        sample_windows([[2, 3, 4]] * 5, nsamples=100, seqlen=32, seed=0, eos_id=0)
    with pytest.raises(ShardError, match=r"5 documents \(15 tokens.*needs 100 windows x 32 tokens; it filled 0"):
        sample_windows([[2, 3, 4]] * 5, nsamples=100, seqlen=32, seed=0, eos_id=0, sampling="documents")
    with pytest.raises(ShardError, match="needs a BOS token"):
        sample_windows([[2, 3, 4]] * 50, nsamples=1, seqlen=8, seed=0, eos_id=0, bos="window")


def test_tokens_round_trip_and_chat_documents(tmp_path, world_tokenizer):
    tok = world_tokenizer
    docs = [{"id": "a:0", "text": "the cat sat"}, {"id": "a:1", "messages": [{"role": "user", "content": "hi"}]}]
    with pytest.raises(ShardError, match="no chat template"):
        tokenize_corpus(docs, tok, "chatty")
    tok = tok.__class__(tokenizer_object=tok.backend_tokenizer, bos_token="<s>", eos_token="</s>")
    tok.chat_template = "{% for m in messages %}<s>{{ m.role }}: {{ m.content }}\n{% endfor %}"
    ids = tokenize_corpus(docs, tok, "chatty")
    assert ids[0] == _ids(tok, ["the cat sat"])[0] and ids[1][0] == tok.bos_token_id
    write_tokens(tmp_path / "t.parquet", ids, [d["id"] for d in docs], {"source": "chatty"})
    back, record_ids = read_tokens(tmp_path / "t.parquet")
    assert [b.tolist() for b in back] == ids and record_ids == ["a:0", "a:1"]
    # the chat template's own BOS is kept, not doubled, under the document policy
    n = min(8, len(ids[1]))
    windows, _, _ = sample_windows(
        [ids[1]], 1, n, seed=0, eos_id=tok.eos_token_id, sampling="documents", bos="document", bos_id=tok.bos_token_id
    )
    assert windows[0].tolist() == ids[1][:n]
