"""Calibration sources: local files of every format, hub datasets (stood in for by dataset folders on
disk), templates, chat records, and the errors a user meets with bad sources."""

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from calmix.calibration.corpora import CorpusError, load_documents, read_corpus, template_fields, write_corpus

RECORDS = [{"question": f"what is {i}+{i}?", "answer": str(2 * i), "n": i} for i in range(6)]
TEMPLATE = "{question}\n{answer}"
WANT = [f"what is {i}+{i}?\n{2 * i}" for i in range(6)]


def _write(path, records, fmt):
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif fmt == "json":
        path.write_text(json.dumps({"data": records}))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    elif fmt == "csv":
        keys = list(records[0])
        path.write_text(",".join(keys) + "\n" + "".join(",".join(json.dumps(str(r[k])) for k in keys) + "\n" for r in records))
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "csv"])
def test_local_files_of_every_format_give_the_same_documents(tmp_path, fmt):
    path = _write(tmp_path / f"qa.{fmt}", RECORDS, fmt)
    docs, provenance = load_documents("qa", {"kind": "local", "path": str(path), "template": TEMPLATE})
    assert [d["text"] for d in docs] == WANT
    assert all(d["id"].startswith(f"{path}:") for d in docs) and len({d["id"] for d in docs}) == 6
    assert provenance["files"][0]["path"] == str(path) and len(provenance["files"][0]["sha256"]) == 64


def test_text_files_globs_max_docs_and_nested_fields(tmp_path):
    (tmp_path / "b.txt").write_text("second file\n")
    (tmp_path / "a.txt").write_text("first doc\nline two\n\n\nsecond doc\n")
    docs, provenance = load_documents("t", {"kind": "local", "path": str(tmp_path / "*.txt")})
    assert [d["text"] for d in docs] == ["first doc\nline two", "second doc", "second file"]  # sorted files
    assert [f["path"] for f in provenance["files"]] == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    docs, _ = load_documents("t", {"kind": "local", "path": str(tmp_path / "*.txt"), "max_docs": 2})
    assert len(docs) == 2
    nested = _write(tmp_path / "n.jsonl", [{"q": "x", "choices": {"text": ["a", "b"]}}], "jsonl")
    docs, _ = load_documents("n", {"kind": "local", "path": str(nested), "template": "{q}: {choices[text][1]}"})
    assert docs[0]["text"] == "x: b"
    assert template_fields("{q}: {choices[text][1]} {q}") == ["q", "choices"]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
@pytest.mark.parametrize("streaming", [False, True])
def test_hub_kind_reads_a_dataset_folder(tmp_path, fmt, streaming):
    folder = tmp_path / "dataset"
    _write(folder / "data" / f"train.{fmt}", RECORDS, fmt)
    _write(folder / "data" / f"test.{fmt}", RECORDS[:2], fmt)
    spec = {"kind": "hub", "path": str(folder), "split": "train", "template": TEMPLATE, "streaming": streaming}
    docs, provenance = load_documents("qa", spec)
    assert [d["text"] for d in docs] == WANT and [d["id"] for d in docs] == [f"train:{i}" for i in range(6)]
    assert provenance["revision"] is None and provenance["split"] == "train"
    docs, _ = load_documents("qa", {**spec, "split": "test", "max_docs": 1})
    assert [d["text"] for d in docs] == WANT[:1]


def test_chat_records_keep_their_messages(tmp_path):
    chats = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}]} for i in range(3)]
    path = _write(tmp_path / "chat.jsonl", chats + [{"messages": []}], "jsonl")
    docs, _ = load_documents("chat", {"kind": "local", "path": str(path), "chat_field": "messages"})
    assert len(docs) == 3 and docs[1]["messages"][0] == {"role": "user", "content": "hi 1"}
    bad = _write(tmp_path / "bad.jsonl", [{"messages": "not a list"}], "jsonl")
    with pytest.raises(CorpusError, match="not a list of {role, content} messages"):
        load_documents("chat", {"kind": "local", "path": str(bad), "chat_field": "messages"})


def test_corpus_file_and_manifest(tmp_path):
    path = _write(tmp_path / "qa.jsonl", RECORDS, "jsonl")
    spec = {"kind": "local", "path": str(path), "template": TEMPLATE}
    docs, provenance = load_documents("qa", spec)
    manifest = write_corpus(docs, tmp_path / "out" / "qa.jsonl", "qa", spec, provenance)
    assert read_corpus(tmp_path / "out" / "qa.jsonl") == docs
    assert json.loads((tmp_path / "out" / "qa.json").read_text()) == manifest
    assert manifest["documents"] == 6 and manifest["first_id"] == docs[0]["id"] and manifest["files"]


# ------------------------------------------------------------------------------------------------
# Errors name the source, the file or dataset, and what to do
# ------------------------------------------------------------------------------------------------


def test_missing_template_field_names_the_field_and_the_fields_present(tmp_path):
    path = _write(tmp_path / "qa.jsonl", RECORDS, "jsonl")
    with pytest.raises(CorpusError, match=r"source 'qa': template field 'answr' is missing from record .*qa.jsonl:1 "
                                          r"of .*; fields present: answer, n, question"):
        load_documents("qa", {"kind": "local", "path": str(path), "template": "{question}\n{answr}"})


def test_unreadable_local_file_is_named(tmp_path):
    bad = tmp_path / "broken.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n\xff\xfe not utf-8\n')
    with pytest.raises(CorpusError, match=r"source 'b': cannot read .*broken.jsonl as jsonl"):
        load_documents("b", {"kind": "local", "path": str(bad)})
    notjson = _write(tmp_path / "x.jsonl", [], "jsonl")
    notjson.write_text("{oops\n")
    with pytest.raises(CorpusError, match=r"x.jsonl line 1 is not JSON"):
        load_documents("x", {"kind": "local", "path": str(notjson)})
    with pytest.raises(CorpusError, match=r"source 'm': .*missing.txt does not exist"):
        load_documents("m", {"kind": "local", "path": str(tmp_path / "missing.txt")})
    with pytest.raises(CorpusError, match=r"no file matches"):
        load_documents("g", {"kind": "local", "path": str(tmp_path / "*.parquet")})
    odd = tmp_path / "data.xyz"
    odd.write_text("x")
    with pytest.raises(CorpusError, match="set format to one of"):
        load_documents("o", {"kind": "local", "path": str(odd)})


def test_hub_dataset_without_network_fails_at_once_and_names_the_remedy(monkeypatch, tmp_path):
    # No network here (and an empty cache): the probe fails within seconds instead of minutes of retries.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    spec = {"kind": "hub", "path": "allenai/c4", "revision": "607bd4c8450a42878aa9ddc051a65a055450ef87",
            "split": "train", "data_files": "en/c4-train.00000-of-01024.json.gz"}
    start = time.perf_counter()
    with pytest.raises(CorpusError) as err:
        load_documents("c4", spec)
    assert time.perf_counter() - start < 30
    message = str(err.value)
    assert "source 'c4'" in message and "'allenai/c4'" in message and "snakemake prefetch" in message


def test_hub_model_without_network_fails_at_once_and_names_the_remedy(monkeypatch, tmp_path):
    from calmix.fetch.hub import HubUnreachable, download_model

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(HubUnreachable, match=r"model 'meta-llama/Llama-3.1-8B' \(revision d04e.*snakemake prefetch"):
        download_model("meta-llama/Llama-3.1-8B", "d04e592bb4f6aa9cfee91e2e20afa771667e1d4b")
    assert time.perf_counter() - start < 30


def test_model_folder_follows_a_fetch_manifest(tmp_path):
    from calmix.models.folders import model_folder

    (tmp_path / "llama.json").write_text(json.dumps({"path": "/cache/snapshots/abc"}))
    assert str(model_folder(tmp_path / "llama.json")) == "/cache/snapshots/abc"
    assert model_folder(tmp_path / "folder") == tmp_path / "folder"


def test_hub_text_folder_and_a_source_end_to_end(tmp_path, world_tokenizer):
    # A text dataset folder (one record per line, as datasets' text loader reads it), then the whole
    # path a source takes: documents -> token ids -> a shard in documents mode with a BOS per document.
    from calmix.calibration.shards import build_shard, load_windows, tokenize_corpus

    folder = tmp_path / "lines"
    folder.mkdir()
    lines = [f"the city of tor{i}ville lies in the north." for i in range(40)]
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    docs, _ = load_documents("lines", {"kind": "hub", "path": str(folder)})
    assert [d["text"] for d in docs] == lines and docs[3]["id"] == "train:3"
    tok = world_tokenizer
    ids = tokenize_corpus(docs, tok, "lines")
    manifest = build_shard(
        ids, [d["id"] for d in docs], nsamples=4, seqlen=24, seed=3, source="lines", spec={}, sampling="documents",
        bos="document", bos_id=tok.bos_token_id, eos_id=tok.eos_token_id, tokens_sha256="", tokenizer_sha256="",
        path=tmp_path / "s.parquet",
    )
    windows = load_windows(tmp_path / "s.parquet")
    assert windows.shape == (4, 24) and (windows[:, 0] == tok.bos_token_id).all()
    for spans, rids, row in zip(manifest["windows"], manifest["record_ids"], windows):
        first = int(rids[0].split(":")[1])
        assert row[1 : 1 + spans[0][2] - 1].tolist() == ids[first][: spans[0][2] - 1]
