"""Tests for calmix.evaluation: the four local lm-eval tasks on a tiny random LLaMA.

The scores of a random model say nothing, so correctness of the scoring (filters,
exact_match, acc, chance) is checked with a fake lm-eval model that answers from a
lookup table; the tiny LLaMA checks that the real HFLM path runs, is deterministic and
reports what it should.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from calmix import evaluation
from calmix.evaluation import TaskConfigError, evaluate, load_task_config

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
    subprocess.run([sys.executable, "-c", "import calmix.evaluation"], check=True)
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
        assert {"metric", "score", "stderr", "chance", "n", "output_type"} <= set(summary)
        assert summary["metric"] == expected_metric[task]
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
    assert settings["num_fewshot"] == 0
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
    import lm_eval.models.huggingface as hf

    gens, lls = _answer_key(world["docs"])
    monkeypatch.setattr(hf, "HFLM", _fake_lm_class(gens, lls, wrong=wrong))
    res = evaluate("fake-model", TASKS, task_dir=TASK_DIR, data_root=world["root"])
    expected = 0.0 if wrong else 1.0
    for task in TASKS:
        assert res["tasks"][task]["score"] == expected, task
        assert res["tasks"][task]["n"] == N_DOCS[task]


def test_math_filter_needs_the_answer_phrase(world, monkeypatch):
    """A bare number (no "The answer is") is not credited: the regex falls back to [invalid]."""
    import lm_eval.models.huggingface as hf

    gens, lls = _answer_key(world["docs"])
    bare = {p: " " + r["answer"] for r in world["docs"]["world_math"] for p in [r["prompt"]]}
    monkeypatch.setattr(hf, "HFLM", _fake_lm_class({**gens, **bare}, lls))
    res = evaluate("fake-model", ["world_math"], task_dir=TASK_DIR, data_root=world["root"])
    assert res["tasks"]["world_math"]["score"] == 0.0


def test_chance_uses_per_doc_choice_counts(tmp_path, monkeypatch):
    docs = _docs(random.Random(1))
    docs["world_general"] = [
        {"query": "Velmora is a city in", "choices": ["Drask", "Olvena"], "label": 1},
        {"query": "Drask is a city in", "choices": ["Velmora", "Olvena", "Tormund", "Quessa"], "label": 0},
    ]
    _write_data(tmp_path, docs)
    import lm_eval.models.huggingface as hf

    gens, lls = _answer_key(docs)
    monkeypatch.setattr(hf, "HFLM", _fake_lm_class(gens, lls))
    res = evaluate("fake-model", ["world_general"], task_dir=TASK_DIR, data_root=tmp_path)
    assert res["tasks"]["world_general"]["chance"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert res["tasks"]["world_general"]["score"] == 1.0
    assert res["tasks"]["world_general"]["n"] == 2


def test_default_task_dir_points_at_resources():
    assert evaluation.DEFAULT_TASK_DIR == TASK_DIR


def test_overfit_tiny_llama_gets_code_right(world, tmp_path):
    """End to end through HFLM: a model trained on the code answers scores (nearly) 1.

    Checks what the fake model cannot: that HFLM's greedy generation keeps the leading
    space of " x + 7", stops at the newline, and that "strip" then matches the answer.
    (The math regex is covered by the fake-model tests; training on it too doubles the time.)
    """
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
    model.save_pretrained(tmp_path / "fit")
    tok.save_pretrained(tmp_path / "fit")

    res = evaluate(tmp_path / "fit", ["world_code"], task_dir=TASK_DIR, data_root=world["root"])
    assert res["tasks"]["world_code"]["score"] >= 0.8  # 1.0 here; random init scores 0


def test_code_executing_tasks_are_refused_without_the_opt_in(tmp_path):
    with pytest.raises(TaskConfigError, match=r"\['humaneval'\] execute model-written code"):
        evaluate(tmp_path, ["humaneval"], task_dir=tmp_path, data_root=tmp_path)


def test_items_round_trip(tmp_path, tiny_result):
    from calmix.evaluation import read_items, write_items

    write_items(tiny_result["items"], tmp_path / "x.items.parquet")
    back = read_items(tmp_path / "x.items.parquet")
    assert back.to_dict("records") == tiny_result["items"] and not list(tmp_path.glob(".*tmp*"))
