"""Tests for calmix.evaluation.harness: the local lm-eval tasks on a tiny random LLaMA.

The scores of a random model say nothing, so correctness of the scoring (filters,
exact_match, acc, chance) is checked with a fake lm-eval model that answers from a
lookup table; the tiny LLaMA checks that the real HFLM path runs, is deterministic and
reports what it should.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from calmix.evaluation import scoring, tasks
from calmix.evaluation.harness import evaluate, item_subset
from calmix.evaluation.scoring import MetricError
from calmix.evaluation.tasks import TaskConfigError, load_task_config
from calmix.models.loading import write_checkpoint_manifest
from calmix.world.domain import World

TASK_DIR = Path(__file__).resolve().parent.parent / "resources" / "lm_eval_tasks"
TASKS = ["world_general", "world_commonsense", "world_code", "world_math"]
N_DOCS = {"world_general": 12, "world_commonsense": 10, "world_code": 11, "world_math": 13}

CITIES = ["Velmora", "Drask", "Olvena", "Tormund", "Quessa", "Brinn", "Caldor", "Ysmere"]
ITEMS = ["apples", "stones", "coins", "books"]
NAMES = ["Mia", "Tom", "Ana", "Raf"]


def _docs(rng: random.Random) -> dict[str, list[dict]]:
    general = []
    for i in range(N_DOCS["world_general"]):
        choices = rng.sample(CITIES[1:], 4)
        query = f"{CITIES[i % len(CITIES)]} of region {i} is a city in"  # unique: the fake model keys on it
        general.append({"query": query, "choices": choices, "label": i % 4})
    commonsense = []
    for i in range(N_DOCS["world_commonsense"]):
        commonsense.append(
            {"query": f"If you drop stone {i} it will", "choices": ["fall", "float", "sing", "melt"], "label": i % 4}
        )
    code = [{"prompt": f"def add_{k}(x):\n    return", "answer": f"x + {k}"} for k in range(N_DOCS["world_code"])]
    math_docs = []
    for i in range(N_DOCS["world_math"]):
        a, b, who, what = i + 1, (3 * i) % 7 + 1, NAMES[i % 4], ITEMS[i % 4]
        math_docs.append(
            {
                "prompt": f"Question: {who} has {a} {what} and finds {b} more {what}. "
                f"How many {what} does {who} have now?\nAnswer:",
                "answer": str(a + b),
            }
        )
    return {"world_general": general, "world_commonsense": commonsense, "world_code": code, "world_math": math_docs}


def _write_data(root: Path, docs: dict[str, list[dict]]) -> None:
    out = root / "results" / "world" / "eval"
    out.mkdir(parents=True, exist_ok=True)
    for task, rows in docs.items():
        (out / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _corpus(docs: dict[str, list[dict]]) -> list[str]:
    lines = []
    for rows in docs.values():
        for r in rows:
            if "choices" in r:
                lines += [f"{r['query']} {c}" for c in r["choices"]]
            else:
                lines.append(f"{r['prompt']} {r['answer']}")
    lines += [f"{a} + {b} = {a + b}. The answer is {a + b}." for a in range(12) for b in range(12)]
    return lines


def _save_tiny_llama(path: Path, corpus: list[str]) -> None:
    """Random LLaMA (~30k params) + byte-level BPE tokenizer with <s>/</s> and no pad."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    assert hf_tok.pad_token is None  # HFLM has to cope with that

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    hf_tok.save_pretrained(path)
    write_checkpoint_manifest(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("world")
    docs = _docs(random.Random(0))
    _write_data(root, docs)
    model_dir = root / "model"
    _save_tiny_llama(model_dir, _corpus(docs))
    return {"root": root, "docs": docs, "model": model_dir}


@pytest.fixture(scope="module")
def tiny_result(world) -> dict:
    return evaluate(world["model"], TASKS, task_dir=TASK_DIR, data_root=world["root"], batch_size=8)


@pytest.fixture(scope="module")
def optional_tasks(world) -> dict:
    """Data of the optional tasks next to the others: world_code_exec over the add_k functions of
    world_code (which the fitted model learns), and a few held-out world documents."""
    code_exec = [
        {"prompt": f"def add_{k}(x):\n    return", "answer": f"x + {k}", "entry_point": f"add_{k}",
         "tests": [f"assert add_{k}({v}) == {v + k}" for v in (-3, 0, 11)]}
        for k in range(N_DOCS["world_code"])
    ]
    assert [d["prompt"] for d in code_exec] == [d["prompt"] for d in world["docs"]["world_code"]]
    texts = World(0).eval_items("world_perplexity", 5, seed=0)
    docs = {"world_code_exec": code_exec, "world_perplexity": texts}
    _write_data(world["root"], docs)
    return docs


@pytest.fixture(scope="module")
def fit_model(world, tmp_path_factory) -> Path:
    """The tiny LLaMA trained until it completes every world_code function head with its body."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lines = [f"{d['prompt']} {d['answer']}\n" for d in world["docs"]["world_code"]]
    tok = AutoTokenizer.from_pretrained(world["model"])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(world["model"])
    encoded = [tok(line).input_ids for line in lines]
    width = max(map(len, encoded))
    ids = torch.full((len(encoded), width), tok.eos_token_id)
    labels = torch.full((len(encoded), width), -100)
    for i, row in enumerate(encoded):
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(row)] = torch.tensor(row)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2)
    model.train()
    for _ in range(150):
        model(input_ids=ids, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    path = tmp_path_factory.mktemp("fit") / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    write_checkpoint_manifest(path)
    return path


# ----------------------------------------------------------------- load_task_config


def test_load_task_config_makes_data_paths_absolute(world):
    cfg = load_task_config("world_code", TASK_DIR, world["root"])
    path = Path(cfg["dataset_kwargs"]["data_files"]["test"])
    assert path.is_absolute()
    assert path == (world["root"] / "results/world/eval/world_code.jsonl").resolve()
    assert cfg["task"] == "world_code"
    assert cfg["output_type"] == "generate_until"


def test_task_yamls_reference_relative_data(world):
    """The YAMLs themselves keep the workflow-relative path; only the loader anchors it."""
    for task in TASKS:
        text = (TASK_DIR / f"{task}.yaml").read_text()
        assert f"results/world/eval/{task}.jsonl" in text


def test_missing_yaml_is_named(tmp_path):
    with pytest.raises(TaskConfigError, match=r"world_nope.*world_nope\.yaml"):
        load_task_config("world_nope", TASK_DIR, tmp_path)


def test_missing_data_file_is_named(tmp_path):
    with pytest.raises(TaskConfigError, match=r"world_math.*results/world/eval/world_math\.jsonl"):
        load_task_config("world_math", TASK_DIR, tmp_path)


def test_evaluate_reports_missing_data_before_loading_model(tmp_path):
    with pytest.raises(TaskConfigError, match="world_general"):
        evaluate(tmp_path, ["world_general"], task_dir=TASK_DIR, data_root=tmp_path)


def test_unknown_task_is_named(world):
    """Names without a YAML go to lm-eval's built-in index (~8 s to build), then fail clearly."""
    with pytest.raises(TaskConfigError, match=r"no_such_task.*no_such_task\.yaml"):
        evaluate(world["model"], ["world_code", "no_such_task"], task_dir=TASK_DIR, data_root=world["root"])


def test_import_is_cheap():
    import subprocess
    import sys
    import time

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import calmix.evaluation.harness"], check=True)
    assert time.perf_counter() - start < 3.0


# ----------------------------------------------------------------- tiny LLaMA through HFLM


def test_evaluate_tiny_llama(world, tiny_result):
    res = tiny_result
    assert set(res) == {"tasks", "items", "settings"}
    assert set(res["tasks"]) == set(TASKS)
    # per-item scores under each task's primary metric: one per document, their mean is the score
    for task, summary in res["tasks"].items():
        scores = [r["score"] for r in res["items"] if r["task"] == task]
        assert len(scores) == N_DOCS[task] and sum(scores) / len(scores) == pytest.approx(summary["score"])
    expected_metric = {
        "world_general": "acc,none",
        "world_commonsense": "acc,none",
        "world_code": "exact_match,strip",
        "world_math": "exact_match,strict-match",
    }
    for task, summary in res["tasks"].items():
        assert {"metric", "score", "stderr", "chance", "n", "output_type", "higher_is_better", "aggregation"} <= set(summary)
        assert summary["metric"] == expected_metric[task]
        assert summary["higher_is_better"] is True and summary["aggregation"] == "mean"
        assert 0.0 <= summary["score"] <= 1.0
        assert summary["n"] == N_DOCS[task]
        assert summary["stderr"] is None or summary["stderr"] >= 0.0
    for task in ("world_general", "world_commonsense"):
        assert res["tasks"][task]["chance"] == pytest.approx(0.25)
        assert res["tasks"][task]["output_type"] == "multiple_choice"
    for task in ("world_code", "world_math"):
        assert res["tasks"][task]["chance"] == 0.0
        assert res["tasks"][task]["output_type"] == "generate_until"

    settings = res["settings"]
    assert settings["batch_size"] == 8 and settings["limit"] is None and settings["seed"] == 1234
    assert settings["dtype"] == "float32" and settings["device"] == "cpu"
    assert settings["num_fewshot"] is None and settings["metric"] == {} and "task_num_fewshot" not in settings
    assert {s["num_fewshot"] for s in res["tasks"].values()} == {0}  # the world's YAMLs say 0
    assert all(r["weight"] == 1.0 for r in res["items"])
    assert settings["lm_eval_version"].startswith("0.4")
    assert set(settings["task_versions"]) == set(TASKS)
    json.dumps(res, allow_nan=False)  # plain JSON, no numpy scalars


def test_evaluate_is_deterministic_and_respects_limit(world, tiny_result):
    again = evaluate(world["model"], TASKS, task_dir=TASK_DIR, data_root=world["root"], batch_size=8)
    assert {t: s["score"] for t, s in again["tasks"].items()} == {
        t: s["score"] for t, s in tiny_result["tasks"].items()
    }
    limited = evaluate(
        world["model"], ["world_general"], task_dir=TASK_DIR, data_root=world["root"], batch_size=8, limit=5
    )
    assert limited["tasks"]["world_general"]["n"] == 5
    assert limited["settings"]["limit"] == 5


def test_task_limits_cap_each_task_as_its_own_limit_would(world):
    """A per-task cap gives each task exactly the items and scores a run with that limit gives it."""
    both = evaluate(world["model"], ["world_general", "world_math"], task_dir=TASK_DIR, data_root=world["root"],
                    batch_size=8, limit=6, task_limits={"world_math": 3})
    for task, cap in (("world_general", 6), ("world_math", 3)):
        alone = evaluate(world["model"], [task], task_dir=TASK_DIR, data_root=world["root"], batch_size=8, limit=cap)
        assert both["tasks"][task] == alone["tasks"][task] and both["tasks"][task]["n"] == cap
        assert [i for i in both["items"] if i["task"] == task] == alone["items"]
    assert both["settings"]["task_limits"] == {"world_math": 3}
    with pytest.raises(TaskConfigError, match="world_code"):
        evaluate(world["model"], ["world_math"], task_dir=TASK_DIR, data_root=world["root"], task_limits={"world_code": 2})


def test_evaluate_independent_of_cwd(world, tmp_path, monkeypatch):
    """Relative data_files must not be resolved against the working directory."""
    monkeypatch.chdir(tmp_path)  # no results/ here
    res = evaluate(world["model"], ["world_math"], task_dir=TASK_DIR, data_root=world["root"], limit=3)
    assert res["tasks"]["world_math"]["n"] == 3


# ----------------------------------------------------------------- scoring with a fake model


def _answer_key(docs: dict[str, list[dict]]) -> tuple[dict[str, str], dict[tuple[str, str], float]]:
    gens, lls = {}, {}
    for r in docs["world_code"]:
        gens[r["prompt"]] = f"  {r['answer']}  "  # surrounding whitespace must not matter
    for r in docs["world_math"]:
        a = r["answer"]
        gens[r["prompt"]] = f" 1 + 2 = 3. The answer is {a}."
    for task in ("world_general", "world_commonsense"):
        for r in docs[task]:
            for i, c in enumerate(r["choices"]):
                lls[(r["query"], " " + c)] = 0.0 if i == r["label"] else -5.0
    return gens, lls


def _fake_lm_class(gens: dict[str, str], lls: dict[tuple[str, str], float], *, wrong: bool = False):
    from lm_eval.api.model import LM

    class FakeLM(LM):
        """Answers from the key (or deliberately wrong), to test the scoring pipeline."""

        def __init__(self, **kwargs):
            super().__init__()
            self.kwargs = kwargs

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            out = []
            for req in requests:
                ctx, cont = req.args[:2]
                ll = lls[(ctx, cont)]
                out.append((-ll - 5.0 if wrong else ll, False))
            return out

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError

        def generate_until(self, requests, disable_tqdm: bool = False):
            out = []
            for req in requests:
                ctx, gen_kwargs = req.args[:2]
                assert gen_kwargs["until"] == ["\n"] and gen_kwargs["do_sample"] is False
                text = gens[ctx]
                if wrong:
                    text = text.replace("x + ", "x - ").replace("answer is ", "answer is 1")
                out.append(text)
            return out

    return FakeLM


@pytest.mark.parametrize("wrong", [False, True])
def test_scoring_with_known_answers(world, monkeypatch, wrong):
    from calmix.evaluation import packed as hf

    gens, lls = _answer_key(world["docs"])
    monkeypatch.setattr(hf, "PackedLM", _fake_lm_class(gens, lls, wrong=wrong))
    res = evaluate("fake-model", TASKS, task_dir=TASK_DIR, data_root=world["root"])
    expected = 0.0 if wrong else 1.0
    for task in TASKS:
        assert res["tasks"][task]["score"] == expected, task
        assert res["tasks"][task]["n"] == N_DOCS[task]


def test_math_filter_needs_the_answer_phrase(world, monkeypatch):
    """A bare number (no "The answer is") is not credited: the regex falls back to [invalid]."""
    from calmix.evaluation import packed as hf

    gens, lls = _answer_key(world["docs"])
    bare = {p: " " + r["answer"] for r in world["docs"]["world_math"] for p in [r["prompt"]]}
    monkeypatch.setattr(hf, "PackedLM", _fake_lm_class({**gens, **bare}, lls))
    res = evaluate("fake-model", ["world_math"], task_dir=TASK_DIR, data_root=world["root"])
    assert res["tasks"]["world_math"]["score"] == 0.0


def test_chance_uses_per_doc_choice_counts(tmp_path, monkeypatch):
    docs = _docs(random.Random(1))
    docs["world_general"] = [
        {"query": "Velmora is a city in", "choices": ["Drask", "Olvena"], "label": 1},
        {"query": "Drask is a city in", "choices": ["Velmora", "Olvena", "Tormund", "Quessa"], "label": 0},
    ]
    _write_data(tmp_path, docs)
    from calmix.evaluation import packed as hf

    gens, lls = _answer_key(docs)
    monkeypatch.setattr(hf, "PackedLM", _fake_lm_class(gens, lls))
    res = evaluate("fake-model", ["world_general"], task_dir=TASK_DIR, data_root=tmp_path)
    assert res["tasks"]["world_general"]["chance"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert res["tasks"]["world_general"]["score"] == 1.0
    assert res["tasks"]["world_general"]["n"] == 2


def test_default_task_dir_points_at_resources():
    assert tasks.DEFAULT_TASK_DIR == TASK_DIR


def test_overfit_tiny_llama_gets_code_right(world, fit_model):
    """End to end through HFLM: a model trained on the code answers scores (nearly) 1.

    Checks what the fake model cannot: that HFLM's greedy generation keeps the leading
    space of " x + 7", stops at the newline, and that "strip" then matches the answer.
    (The math regex is covered by the fake-model tests; training on it too doubles the time.)
    """
    res = evaluate(fit_model, ["world_code"], task_dir=TASK_DIR, data_root=world["root"])
    assert res["tasks"]["world_code"]["score"] >= 0.8  # 1.0 here; random init scores 0


def test_code_executing_tasks_are_refused_without_the_opt_in(tmp_path):
    with pytest.raises(TaskConfigError, match=r"\['humaneval'\] execute model-written code"):
        evaluate(tmp_path, ["humaneval"], task_dir=tmp_path, data_root=tmp_path)


def test_items_round_trip(tmp_path, tiny_result):
    from calmix.evaluation.items import read_items, write_items

    write_items(tiny_result["items"], tmp_path / "x.items.parquet")
    back = read_items(tmp_path / "x.items.parquet")
    expected = pd.DataFrame(tiny_result["items"]).reindex(columns=back.columns)
    expected["weight"] = expected["weight"].fillna(1.0)
    pd.testing.assert_frame_equal(back, expected) and not list(tmp_path.glob(".*tmp*"))
    # multiple-choice items keep the gold choice's normalised probability, the others NaN
    mc = back["task"].isin(["world_general", "world_commonsense"])
    assert back.loc[mc, "gold_prob"].between(0, 1).all() and back.loc[~mc, "gold_prob"].isna().all()


def test_items_keep_the_weight_and_a_file_without_it_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from calmix.evaluation.items import read_items, write_items

    items = [
        {"task": "p", "leaf": "p", "doc_id": 0, "score": -12.5, "weight": 7.0},
        {"task": "p", "leaf": "p", "doc_id": 1, "score": -3.0, "weight": 2.0},
    ]
    write_items(items, tmp_path / "p.items.parquet")
    assert read_items(tmp_path / "p.items.parquet").drop(columns="gold_prob").to_dict("records") == items
    pq.write_table(pa.table({"task": ["a"], "leaf": ["a"], "doc_id": [0], "score": [1.0]}), tmp_path / "old.parquet")
    with pytest.raises(KeyError, match="weight"):
        read_items(tmp_path / "old.parquet")


# ----------------------------------------------------------------- per-dimension settings


def _recording_lm_class(contexts: list[str]):
    from lm_eval.api.model import LM

    class RecordingLM(LM):
        """Keeps every multiple-choice context it is asked about; every choice is equally likely."""

        def __init__(self, **kwargs):
            super().__init__()

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            contexts.extend(req.args[0] for req in requests)
            return [(0.0, False) for _ in requests]

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise AssertionError("world_general sends multiple-choice requests only")

        def generate_until(self, requests, disable_tqdm: bool = False):
            raise AssertionError("world_general sends multiple-choice requests only")

    return RecordingLM


@pytest.mark.parametrize("shots", [0, 2])
def test_num_fewshot_puts_other_items_before_each_item(world, monkeypatch, shots):
    """A world YAML says num_fewshot: 0; the dimension's setting must win, and no item is its own shot."""
    from calmix.evaluation import packed as hf

    contexts: list[str] = []
    monkeypatch.setattr(hf, "PackedLM", _recording_lm_class(contexts))
    res = evaluate("fake-model", ["world_general"], task_dir=TASK_DIR, data_root=world["root"], num_fewshot=shots, limit=5)
    assert res["settings"]["num_fewshot"] == shots and res["settings"]["limit"] == 5
    assert res["tasks"]["world_general"]["num_fewshot"] == shots
    docs = world["docs"]["world_general"]
    solved = {f"{d['query']} {d['choices'][d['label']]}" for d in docs}
    queries = {docs[i]["query"] for i in item_subset("world_general", len(docs), 5, 1234)}  # evaluate's default seed
    assert len(contexts) == 5 * 4 and {c.split("\n\n")[-1] for c in contexts} == queries
    for context in contexts:
        *examples, query = context.split("\n\n")
        assert len(examples) == shots
        assert all(e in solved for e in examples) and not any(e.startswith(query + " ") for e in examples)
    again: list[str] = []
    monkeypatch.setattr(hf, "PackedLM", _recording_lm_class(again))
    evaluate("fake-model", ["world_general"], task_dir=TASK_DIR, data_root=world["root"], num_fewshot=shots, limit=5)
    assert again == contexts  # shots drawn with the seed


def test_metric_override_scores_and_items_use_that_key(world, tiny_result):
    res = evaluate(
        world["model"], ["world_general"], task_dir=TASK_DIR, data_root=world["root"], batch_size=8,
        metric={"world_general": "acc_norm,none"},
    )
    summary = res["tasks"]["world_general"]
    assert summary["metric"] == "acc_norm,none" and res["settings"]["metric"] == {"world_general": "acc_norm,none"}
    scores = [r["score"] for r in res["items"]]
    assert len(scores) == N_DOCS["world_general"] and sum(scores) / len(scores) == pytest.approx(summary["score"])
    # the tiny model's acc and acc_norm differ on some item, so the override is really used
    acc = [r["score"] for r in tiny_result["items"] if r["task"] == "world_general"]
    assert acc != scores


def test_metric_override_naming_a_missing_key_fails_before_the_model_loads(world, tmp_path):
    with pytest.raises(MetricError) as err:
        evaluate(
            world["model"], ["world_general", "world_code"], task_dir=TASK_DIR, data_root=world["root"],
            metric={"world_code": "exact_match,none"}, dimension="code",
        )
    message = str(err.value)
    for words in ("dimension 'code'", "task 'world_code'", "'exact_match,none'",
                  "evaluation.dimensions.code.metric.world_code", "exact_match,strip"):
        assert words in message, message
    with pytest.raises(MetricError, match=r"\['world_math'\] name no task"):
        evaluate(world["model"], ["world_general"], task_dir=TASK_DIR, data_root=world["root"],
                 metric={"world_math": "acc,none"})


def test_metric_missing_from_lm_eval_results_is_named():
    """The same message when lm-eval's results lack the key (checked again after the run)."""
    results = {"results": {"world_general": {"alias": "world_general", "acc,none": 0.5, "acc_stderr,none": 0.1}}}
    with pytest.raises(MetricError) as err:
        scoring.leaf_summary("world_general", None, results, None, "acc_norm,none", "general", "world_general")
    assert "dimension 'general', task 'world_general': metric 'acc_norm,none'" in str(err.value)
    assert str(err.value).endswith("lm-eval returned: acc,none")


# ----------------------------------------------------------------- code execution


def test_world_code_exec_needs_the_opt_in(world, optional_tasks):
    assert tasks.executes_code("world_code_exec") and not tasks.executes_code("world_code")
    with pytest.raises(TaskConfigError, match=r"\['world_code_exec'\] execute model-written code"):
        evaluate(world["model"], ["world_code_exec"], task_dir=TASK_DIR, data_root=world["root"])


def test_world_code_exec_runs_the_completions(world, optional_tasks, monkeypatch):
    """Through lm-eval with a fake model: equivalent bodies pass, wrong ones fail, each item scored."""
    from calmix.evaluation import packed as hf

    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    docs = optional_tasks["world_code_exec"]
    bodies = [" x + {k}", " {k} + x", " (x + {k})", " x - {k}", " x +"]
    gens = {d["prompt"]: bodies[k % len(bodies)].format(k=k) for k, d in enumerate(docs)}
    monkeypatch.setattr(hf, "PackedLM", _fake_lm_class(gens, {}))
    res = evaluate("fake-model", ["world_code_exec"], task_dir=TASK_DIR, data_root=world["root"],
                   allow_code_execution=True)
    summary = res["tasks"]["world_code_exec"]
    expected = [float(k % len(bodies) < 3 or k == 0) for k in range(len(docs))]  # x - 0 is right too
    assert [r["score"] for r in res["items"]] == expected
    assert summary["metric"] == "pass@1,none" and summary["score"] == pytest.approx(sum(expected) / len(expected))
    assert summary["higher_is_better"] is True and summary["aggregation"] == "mean" and summary["chance"] == 0.0
    assert "HF_ALLOW_CODE_EVAL" not in os.environ  # set only while the task ran


def test_world_code_exec_on_tiny_models(world, optional_tasks, fit_model):
    for model, floor in ((world["model"], 0.0), (fit_model, 0.8)):
        res = evaluate(model, ["world_code_exec"], task_dir=TASK_DIR, data_root=world["root"], allow_code_execution=True)
        summary = res["tasks"]["world_code_exec"]
        scores = [r["score"] for r in res["items"]]
        assert len(scores) == summary["n"] == N_DOCS["world_code"] and set(scores) <= {0.0, 1.0}
        assert 0.0 <= summary["score"] <= 1.0 and summary["score"] == pytest.approx(sum(scores) / len(scores))
        assert summary["score"] >= floor  # the fitted model writes working functions


# ----------------------------------------------------------------- perplexity


@pytest.mark.parametrize("metric, unit", [(None, "words"), ("byte_perplexity,none", "bytes")])
def test_perplexity_items_reproduce_lm_eval(world, optional_tasks, metric, unit):
    """score = an item's total log-likelihood, weight = its words (bytes): exp(-sum/sum) is lm-eval's score."""
    res = evaluate(
        world["model"], ["world_perplexity"], task_dir=TASK_DIR, data_root=world["root"], batch_size=8,
        metric={"world_perplexity": metric} if metric else None,
    )
    summary, items = res["tasks"]["world_perplexity"], res["items"]
    assert summary["metric"] == (metric or "word_perplexity,none")
    assert summary["aggregation"] == "perplexity" and summary["higher_is_better"] is False
    assert summary["chance"] is None and summary["output_type"] == "loglikelihood_rolling"
    assert summary["num_fewshot"] == 0
    texts = [d["text"] for d in optional_tasks["world_perplexity"]]
    assert summary["n"] == len(items) == len(texts)
    count = (lambda t: len(re.split(r"\s+", t))) if unit == "words" else (lambda t: len(t.encode()))
    assert [r["weight"] for r in items] == [count(t) for t in texts]
    assert all(r["score"] < 0 for r in items)
    pooled = math.exp(-sum(r["score"] for r in items) / sum(r["weight"] for r in items))
    assert pooled == pytest.approx(summary["score"], rel=1e-9) and summary["score"] > 1
    json.dumps(res, allow_nan=False)


def test_perplexity_group_pools_its_items():
    leaves = {
        "a": {"metric": "word_perplexity,none", "score": 10.0, "chance": None, "n": 1, "output_type": "loglikelihood_rolling",
              "higher_is_better": False, "aggregation": "perplexity"},
        "b": {"metric": "word_perplexity,none", "score": 2.0, "chance": None, "n": 1, "output_type": "loglikelihood_rolling",
              "higher_is_better": False, "aggregation": "perplexity"},
    }
    items = [{"score": -math.log(10.0) * 3, "weight": 3.0}, {"score": -math.log(2.0) * 1, "weight": 1.0}]
    summary = scoring.group_summary("g", leaves, {"results": {}}, items)
    assert summary["score"] == pytest.approx(math.exp((3 * math.log(10) + math.log(2)) / 4))
    assert summary["aggregation"] == "perplexity" and summary["higher_is_better"] is False and summary["chance"] is None
    mixed = {**leaves, "c": {**leaves["a"], "aggregation": "mean"}}
    with pytest.raises(MetricError, match="mix mean and perplexity"):
        scoring.group_summary("g", mixed, {"results": {}}, items)


# ----------------------------------------------------------------- one job per checkpoint
def test_a_checkpoint_job_rescores_only_the_dimensions_whose_key_changed(world, tmp_path, monkeypatch):
    """evaluate_checkpoint: one model load for all dimensions; on a rerun, a dimension whose record
    carries the same evaluation key is kept byte for byte (the model is not even loaded when all
    are), one whose settings, data or record changed is scored again."""
    from calmix.evaluation import checkpoint, harness

    data = {t: [world["root"] / f"results/world/eval/{t}.jsonl"] for t in ("world_general", "world_code")}
    outputs = {t: (tmp_path / f"{t}.json", tmp_path / f"{t}.items.parquet") for t in data}
    loads = []
    real_load = harness.load_lm
    monkeypatch.setattr(harness, "load_lm", lambda *a, **k: loads.append(a) or real_load(*a, **k))

    def run(dims):
        return checkpoint.evaluate_checkpoint(
            world["model"], dims, outputs, data=data, identity={"model": "tiny"}, context={"code": {"x": "1"}},
            task_dir=TASK_DIR, data_root=world["root"])

    dims = {t: {"tasks": [t], "harness": {"batch_size": 8, "limit": 6}} for t in data}
    assert run(dims) == {"world_general": "scored", "world_code": "scored"} and len(loads) == 1
    first = {t: (p.read_bytes(), q.read_bytes()) for t, (p, q) in outputs.items()}
    record = json.loads(outputs["world_code"][0].read_text())
    assert record["model"] == "tiny" and record["dimension"] == "world_code" and record["tasks"]["world_code"]["n"] == 6
    assert record["weights_sha256"] and len(record["evaluation_key"]) == 64

    assert run(dims) == {"world_general": "kept", "world_code": "kept"} and len(loads) == 1  # no model load at all
    assert {t: (p.read_bytes(), q.read_bytes()) for t, (p, q) in outputs.items()} == first

    dims["world_code"]["harness"]["limit"] = 4
    assert run(dims) == {"world_general": "kept", "world_code": "scored"}
    assert outputs["world_general"][0].read_bytes() == first["world_general"][0]
    assert json.loads(outputs["world_code"][0].read_text())["tasks"]["world_code"]["n"] == 4

    outputs["world_general"][1].unlink()  # a lost per-item file
    assert run(dims)["world_general"] == "scored"
    assert outputs["world_general"][1].read_bytes() == first["world_general"][1]  # same settings, same scores

    with data["world_code"][0].open("a") as f:  # the dimension's data changed
        f.write(data["world_code"][0].read_text().splitlines()[0] + "\n")
    assert run(dims) == {"world_general": "kept", "world_code": "scored"}


def test_a_pruned_checkpoint_job_prunes_only_what_its_key_or_a_stale_record_needs(world, tmp_path, monkeypatch):
    """prune_and_evaluate: a temporary checkpoint is removed after its evaluation and pruned again only
    when a record needs it; the prune key follows the pruning code while the records follow the
    weights, so a pruning edit that leaves the weights alone rescores nothing."""
    from calmix.evaluation import pruned

    prunes = []
    real_prune = pruned.prune_checkpoint
    monkeypatch.setattr(pruned, "prune_checkpoint", lambda *a, **k: prunes.append(a) or real_prune(*a, **k))
    task = "world_general"
    data = {task: [world["root"] / f"results/world/eval/{task}.jsonl"]}
    outputs = {task: (tmp_path / f"{task}.json", tmp_path / f"{task}.items.parquet")}
    checkpoint, report = tmp_path / "pruned", tmp_path / "report.json"

    def run(limit=6, code="1"):
        return pruned.prune_and_evaluate(
            world["model"], None, checkpoint, report, method="magnitude", target="0.5",
            pruning_code={"calmix.pruning.magnitude": code}, options={}, model_manifest=None, dtype="float32",
            device="cpu", dimensions={task: {"tasks": [task], "harness": {"batch_size": 8, "limit": limit}}},
            outputs=outputs, data=data, identity={"model": "tiny"}, context={"code": {"x": "1"}},
            task_dir=TASK_DIR, data_root=world["root"])

    assert run() == {task: "scored"} and len(prunes) == 1 and not checkpoint.exists()
    first = json.loads(report.read_text())
    assert len(first["prune_key"]) == 64
    assert json.loads(outputs[task][0].read_text())["weights_sha256"] == first["weights_sha256"]
    items = outputs[task][1].read_bytes()

    assert run() == {task: "kept"} and len(prunes) == 1  # every record current: nothing pruned
    assert run(limit=4) == {task: "scored"} and len(prunes) == 2 and not checkpoint.exists()
    assert json.loads(report.read_text())["weights_sha256"] == first["weights_sha256"]  # pruned again, the same weights

    assert run() == {task: "scored"} and len(prunes) == 3 and not checkpoint.exists()
    assert outputs[task][1].read_bytes() == items  # same weights and settings, same scores
    assert run(code="2") == {task: "kept"} and len(prunes) == 4  # new key, same weights
    assert json.loads(report.read_text())["prune_key"] != first["prune_key"]


def _task_objects(world, names: list[str], shots: int | None, task_dir: Path = TASK_DIR) -> tuple[object, list]:
    """lm-eval's task objects of world tasks, with ``shots`` set on each (None: their YAMLs' own)."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_defaults=False)
    objects = []
    for name in names:
        [obj] = manager.load([load_task_config(name, task_dir, world["root"])])["tasks"].values()
        if shots is not None:
            obj.set_config(key="num_fewshot", value=shots)
        objects.append(obj)
    return manager, objects


def _prompts(run: dict, name: str) -> list[tuple]:
    return [(s["doc_id"], s["arguments"], s["resps"], s["filtered_resps"]) for s in run["samples"][name]]


def _own_shots_tasks(tmp_path: Path, shots: dict[str, int]) -> Path:
    """World task YAMLs that say num_fewshot: n (the shipped ones say 0), in a task folder of their own."""
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    for name, n in shots.items():
        text = (TASK_DIR / f"{name}.yaml").read_text()
        assert text.count("\nnum_fewshot: 0\n") == 1
        (task_dir / f"{name}.yaml").write_text(text.replace("\nnum_fewshot: 0\n", f"\nnum_fewshot: {n}\n"))
    return task_dir


def _recording_runs(monkeypatch) -> list[dict]:
    """lm-eval's raw results of every evaluate() call from now on (its prompts are in "samples")."""
    from calmix.evaluation import harness

    runs: list[dict] = []
    real = harness._run_lm_eval
    monkeypatch.setattr(harness, "_run_lm_eval", lambda *a, **k: runs.append(real(*a, **k)) or runs[-1])
    return runs


def test_a_task_takes_its_own_yamls_shots_as_simple_evaluate_does(world, tmp_path, monkeypatch):
    """A dimension that sets no shots scores each task with its YAML's (gsm8k's 5, mbpp's 3; here 2 and
    3, not 0): calmix's prompts are those of lm-eval's simple_evaluate given no num_fewshot, with the
    same seeds, and each task's record names the shots it was scored with."""
    from lm_eval.evaluator import simple_evaluate

    from calmix.evaluation.harness import load_lm

    own, seed = {"world_general": 2, "world_math": 3}, 7
    task_dir = _own_shots_tasks(tmp_path, own)
    runs = _recording_runs(monkeypatch)
    lm = load_lm(world["model"], batch_size=8)
    res = evaluate(world["model"], list(own), task_dir=task_dir, data_root=world["root"], limit=2, seed=seed, lm=lm)
    manager, objects = _task_objects(world, list(own), shots=None, task_dir=task_dir)
    subsets = {name: item_subset(name, len(obj.eval_docs), 2, seed) for name, obj in zip(own, objects)}
    theirs = simple_evaluate(model=lm, tasks=objects, task_manager=manager, samples=subsets, random_seed=seed,
                             numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    for name, n in own.items():
        ours = _prompts(runs[0], name)
        assert ours == _prompts(theirs, name) and len(ours) == 2
        assert all(len(args[0][0].split("\n\n")) == n + 1 for _, args, _, _ in ours)  # n shots, then the item
    assert runs[0]["results"] == theirs["results"]
    assert {t: s["num_fewshot"] for t, s in res["tasks"].items()} == own
    assert res["settings"]["num_fewshot"] is None and "task_num_fewshot" not in res["settings"]


def test_task_num_fewshot_overrides_the_dimension_and_the_yaml(world, tmp_path, monkeypatch):
    """task_num_fewshot wins over num_fewshot, which wins over the YAML (0 included); both are recorded."""
    task_dir = _own_shots_tasks(tmp_path, {"world_general": 2, "world_commonsense": 3})
    runs = _recording_runs(monkeypatch)
    res = evaluate(world["model"], ["world_general", "world_commonsense"], task_dir=task_dir, data_root=world["root"],
                   batch_size=8, limit=3, num_fewshot=0, task_num_fewshot={"world_commonsense": 1})
    shots = {"world_general": 0, "world_commonsense": 1}
    assert {t: s["num_fewshot"] for t, s in res["tasks"].items()} == shots
    assert res["settings"]["num_fewshot"] == 0 and res["settings"]["task_num_fewshot"] == {"world_commonsense": 1}
    for name, n in shots.items():
        assert all(len(args[0][0].split("\n\n")) == n + 1 for _, args, _, _ in _prompts(runs[0], name))
    with pytest.raises(TaskConfigError, match=r"task_num_fewshot for \['world_code'\] name no task"):
        evaluate("fake-model", ["world_general"], task_dir=TASK_DIR, data_root=world["root"],
                 task_num_fewshot={"world_code": 1})


#: The installed lm-eval's YAML of each task of the paper's study (mmlu: one subject's; all 57 include one template).
LM_EVAL_YAMLS = {
    "mmlu": "mmlu/default/mmlu_anatomy.yaml", "hellaswag": "hellaswag/hellaswag.yaml", "piqa": "piqa/piqa.yaml",
    "winogrande": "winogrande/default.yaml", "arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml",
    "humaneval": "humaneval/humaneval.yaml", "mbpp": "mbpp/mbpp.yaml", "gsm8k": "gsm8k/gsm8k.yaml",
}


def test_the_paper_config_states_each_tasks_standard_shots_and_metric():
    """The paper's tasks, resolved as the harness resolves shots (task_num_fewshot, else num_fewshot, else
    the task's own YAML, read offline from the installed lm-eval): gsm8k 5 shots, mbpp 3, mmlu 5 (its
    YAML says none, i.e. 0: the one stated departure), the rest 0; every metric key it names is one of
    the YAML's metrics under one of its filters."""
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    from calmix.config import read_config_files, validate_config

    config = validate_config(read_config_files([str(TASK_DIR.parents[1] / "experiments" / "paper-llama3.1-8b.yaml")]))
    shots, own = {}, {}
    for spec in config["evaluation"]["dimensions"].values():
        for task in spec["tasks"]:
            lm_yaml = load_yaml(Path(lm_eval.__file__).parent / "tasks" / LM_EVAL_YAMLS[task], resolve_func=False,
                                recursive=True)
            own[task] = lm_yaml.get("num_fewshot") or 0
            configured = spec.get("task_num_fewshot", {}).get(task, spec.get("num_fewshot"))
            shots[task] = own[task] if configured is None else configured
            if task in spec["metric"]:
                name, _, filter_name = spec["metric"][task].partition(",")
                assert name in [str(m["metric"]).rpartition(".")[2] for m in lm_yaml["metric_list"]], task
                assert filter_name in ([f["name"] for f in lm_yaml.get("filter_list", [])] or ["none"]), task
    assert shots == {"mmlu": 5, "hellaswag": 0, "piqa": 0, "winogrande": 0, "arc_easy": 0, "arc_challenge": 0,
                     "humaneval": 0, "mbpp": 3, "gsm8k": 5}
    assert {t: n for t, n in shots.items() if n != own[t]} == {"mmlu": 5}
    assert config["evaluation"]["dimensions"]["math"]["metric"] == {"gsm8k": "exact_match,strict-match"}


def test_a_group_whose_subtasks_take_different_shots_needs_one_number():
    from calmix.evaluation.harness import _shots_used

    class Leaf:
        def __init__(self, output_type: str, shots: int):
            self.config = {"output_type": output_type, "num_fewshot": shots}

        def get_config(self, key):
            return self.config[key]

    same = {"a": Leaf("multiple_choice", 5), "b": Leaf("generate_until", 5), "c": Leaf("loglikelihood_rolling", 5)}
    assert _shots_used("g", {k: same[k] for k in "ab"}, "general") == 5
    assert _shots_used("p", {"c": same["c"]}, "general") == 0  # whole documents: no shots, whatever the setting
    with pytest.raises(ValueError, match=r"'evaluation.dimensions.general.task_num_fewshot': \{g: N\}"):
        _shots_used("g", {**same, "d": Leaf("multiple_choice", 0)}, "general")


def test_run_lm_eval_scores_as_simple_evaluate_does(world):
    """calmix calls lm-eval's evaluate() directly (simple_evaluate also probes pip and git after
    scoring); lm-eval's simple_evaluate with the same seeds is the oracle: the same prompts with the
    same shots, the same answers, the same metrics."""
    from lm_eval.evaluator import simple_evaluate

    from calmix.evaluation.harness import _run_lm_eval, load_lm

    lm = load_lm(world["model"], batch_size=8)
    names, seed = ["world_general", "world_math"], 7
    manager, objects = _task_objects(world, names, shots=2)
    subsets = {name: item_subset(name, len(obj.eval_docs), 4, seed) for name, obj in zip(names, objects)}
    ours = _run_lm_eval(lm, manager, objects, samples=subsets, seed=seed, confirm_run_unsafe_code=False)
    manager, objects = _task_objects(world, names, shots=2)
    theirs = simple_evaluate(model=lm, tasks=objects, task_manager=manager, samples=subsets, random_seed=seed, numpy_random_seed=seed,
                             torch_random_seed=seed, fewshot_random_seed=seed)
    assert ours["results"] == theirs["results"]
    for name in names:
        fields = [_prompts(run, name) for run in (ours, theirs)]
        assert fields[0] == fields[1] and len(fields[0]) == 4
        assert all(r"\n\n" in str(args) for _, args, _, _ in fields[0])  # the shots are in the prompts (repr'd)


def test_a_capped_task_is_scored_on_a_seeded_random_subset_the_same_for_every_model():
    """Not the first N (lm-eval's limit, issue #2598): a random subset, sorted, keyed by seed and task only."""
    first = item_subset("hellaswag_local", 10042, 200, 1234)
    assert first == item_subset("hellaswag_local", 10042, 200, 1234) and first == sorted(set(first)) and len(first) == 200
    assert first != list(range(200)) and max(first) > 5000
    assert first != item_subset("piqa_local", 10042, 200, 1234) and first != item_subset("hellaswag_local", 10042, 200, 0)
    assert item_subset("arc_easy_local", 570, 1000, 1234) == list(range(570))
    # the draw is Python's seeded random.sample: the same ids on every machine (a string seed hashes with sha512)
    assert item_subset("hellaswag_local", 10042, 5, 1234) == sorted(random.Random("calmix items 1234 hellaswag_local").sample(range(10042), 5))


def test_gold_probability_is_the_softmax_of_the_choices_at_the_gold():
    from calmix.evaluation.scoring import gold_probability

    lls = [-1.0, -2.5, -0.2, -7.0]
    sample = {"filtered_resps": [(ll, False) for ll in lls], "target": 1}
    expected = np.exp(lls[1]) / np.exp(lls).sum()  # numpy's softmax as the oracle
    assert gold_probability(sample) == pytest.approx(expected, rel=1e-12)
    assert np.isnan(gold_probability({**sample, "target": [0, 2]}))
