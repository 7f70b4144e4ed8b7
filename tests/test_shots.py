"""Few-shot examples never hold the item they precede, and their number fits each task's own items:
checked over every item of the offline tasks as lm-eval renders their prompts, in the harness before a
model loads, and in the config check before any job."""

import shutil
from pathlib import Path

import pytest
import yaml

from calmix.config import ConfigError, validate_config
from calmix.evaluation.harness import evaluate
from calmix.evaluation.offline import build_items, write_items_jsonl
from calmix.evaluation.tasks import DEFAULT_TASK_DIR, TaskConfigError, items_spec, load_task_config
from conftest import TINY

OFFLINE = ["arithmetic_1da_local", "arithmetic_2da_local", "arithmetic_2ds_local", "humaneval_choice"]
SHOTS = 5


@pytest.fixture(scope="module")
def items_root(tmp_path_factory) -> Path:
    """The offline tasks' items, where their YAMLs read them (results/eval/items/<task>.jsonl)."""
    root = tmp_path_factory.mktemp("items")
    for task in OFFLINE:
        write_items_jsonl(build_items(task, items_spec(task))[0], root / "results" / "eval" / "items" / f"{task}.jsonl")
    return root


def _task(name: str, root: Path, shots: int, task_dir: Path = DEFAULT_TASK_DIR):
    from lm_eval.tasks import TaskManager

    [obj] = TaskManager(include_defaults=False).load([load_task_config(name, task_dir, root)])["tasks"].values()
    obj.set_config(key="num_fewshot", value=shots)
    return obj


@pytest.mark.parametrize("task", OFFLINE)
def test_no_item_is_among_its_own_shots(items_root, task):
    """Every item's prompt as lm-eval renders it with 5 shots: the item's question is not in the shots."""
    obj = _task(task, items_root, SHOTS)
    obj.sampler.set_rnd(1234)
    docs = list(obj.eval_docs)
    assert len(docs) == (164 if task == "humaneval_choice" else 500)
    own = [i for i, doc in enumerate(docs)
           if (question := obj.doc_to_text(doc)) in (context := obj.fewshot_context(doc, SHOTS))[: context.rindex(question)]]
    assert own == []


def _without_fewshot_split(tmp_path: Path, task: str) -> Path:
    """A task folder holding the task's YAML as it was before issue 27 (no fewshot_split)."""
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    text = (DEFAULT_TASK_DIR / f"{task}.yaml").read_text()
    lines = [line for line in text.splitlines(keepends=True) if not line.startswith("fewshot_split:")]
    (task_dir / f"{task}.yaml").write_text("".join(lines))
    return task_dir


def test_the_harness_refuses_shots_drawn_from_the_scored_split_without_leaving_the_item_out(items_root, tmp_path):
    task_dir = _without_fewshot_split(tmp_path, "arithmetic_1da_local")
    with pytest.raises(TaskConfigError, match=r"config key 'evaluation.dimensions.math.num_fewshot' to 0"):
        evaluate("never-loaded", ["arithmetic_1da_local"], task_dir=task_dir, data_root=items_root,
                 num_fewshot=SHOTS, dimension="math")


def test_the_harness_refuses_more_shots_than_the_split_gives_before_loading_a_model(items_root, tmp_path):
    with pytest.raises(TaskConfigError, match=r"'evaluation.dimensions.code.task_num_fewshot.humaneval_choice': 164 "
                                              r"shots cannot be drawn .* from 163 items of its test split; set it to at most 163"):
        evaluate("never-loaded", ["humaneval_choice"], task_dir=DEFAULT_TASK_DIR, data_root=items_root,
                 task_num_fewshot={"humaneval_choice": 164}, dimension="code")


def _dims(task: str, shots: int) -> dict:
    config = yaml.safe_load(TINY.read_text())
    config["evaluation"]["dimensions"] = {"d": {"tasks": [task], "task_num_fewshot": {task: shots}}}
    return config


@pytest.mark.parametrize("task, count, builder", [("arithmetic_1da_local", 500, "arithmetic"),
                                                   ("humaneval_choice", 164, "humaneval_choice")])
def test_the_config_check_counts_each_tasks_own_items(task, count, builder):
    validate_config(_dims(task, count - 1))  # e.g. 300 of arithmetic's 500: more than world.eval_items, accepted
    with pytest.raises(ConfigError, match=rf"^config key 'evaluation.dimensions.d.task_num_fewshot.{task}': {count} shots "
                                          rf"cannot be drawn for {task}, which has its YAML's metadata.calmix_items "
                                          rf"\({builder}\) = {count} items .* at most {count - 1}$"):
        validate_config(_dims(task, count))


def test_the_config_check_counts_world_tasks_by_world_eval_items():
    config = _dims("world_general", 24)  # the tiny study's world.eval_items
    with pytest.raises(ConfigError, match=r"world.eval_items = 24 items .* at most 23 or raise world.eval_items$"):
        validate_config(config)


SYNTHETIC = {  # items in the form the package datasets give them (their real items need the wheel)
    "arc_easy_local": lambda i: {"question": f"Which number is {i}?", "answerKey": "A",
                                 "choices": {"label": ["A", "B"], "text": [f"{i}", f"{i + 1}"]}},
    "piqa_local": lambda i: {"goal": f"How do you reach step {i}?", "sol1": f"walk {i}", "sol2": f"run {i}", "label": 0},
}


@pytest.mark.parametrize("task", sorted(SYNTHETIC))
def test_tasks_scoring_their_validation_split_leave_the_item_out_too(tmp_path, task):
    """No fewshot_split and no test_split: lm-eval draws shots from the validation split it scores and,
    the two splits being equal (both unset), leaves the item out."""
    write_items_jsonl([SYNTHETIC[task](i) for i in range(40)], tmp_path / "results" / "eval" / "items" / f"{task}.jsonl")
    obj = _task(task, tmp_path, SHOTS)
    obj.sampler.set_rnd(1234)
    docs = list(obj.eval_docs)
    own = [i for i, doc in enumerate(docs)
           if (question := obj.doc_to_text(doc)) in (context := obj.fewshot_context(doc, SHOTS))[: context.rindex(question)]]
    assert len(docs) == 40 and own == []
