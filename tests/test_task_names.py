"""A task is a name, never a path: a task YAML can import Python (`!function`) and lm-eval renders its
templates unsandboxed, so a path in `evaluation.dimensions.<d>.tasks` must run nothing anywhere."""

import os
from pathlib import Path

import pytest
import yaml

from calmix.config import ConfigError, validate_config
from calmix.evaluation.harness import evaluate
from calmix.evaluation.tasks import DEFAULT_TASK_DIR, TaskNameError, check_task_name, unknown_task_message
from conftest import TINY


@pytest.fixture
def planted(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A task YAML outside the project whose process_docs imports a module that writes a marker file:
    (the YAML's path without .yaml, the marker)."""
    marker = tmp_path / "ran"
    (tmp_path / "planted_module.py").write_text(
        f"open({str(marker)!r}, 'w').write('code ran')\ndef docs(dataset):\n    return dataset\n")
    (tmp_path / "evil.yaml").write_text(
        "task: evil\ndataset_path: json\ntest_split: test\noutput_type: loglikelihood\n"
        "doc_to_text: \"{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}\"\n"
        "doc_to_target: x\nprocess_docs: !function planted_module.docs\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "evil", marker


def _with_task(task: str) -> dict:
    config = yaml.safe_load(TINY.read_text())
    config["evaluation"]["dimensions"]["general"]["tasks"] = [task]
    return config


def _path_names(planted: Path) -> list[str]:
    relative = os.path.relpath(planted, DEFAULT_TASK_DIR)  # ../../../tmp/.../evil
    return [str(planted), relative, f"./{relative}", "world_general/../../" + relative]


def test_a_task_named_by_a_path_is_refused_by_the_config_check_and_runs_nothing(planted):
    path, marker = planted
    for name in _path_names(path):
        with pytest.raises(ConfigError, match=r"^config key 'evaluation.dimensions.general.tasks\[0\]': .* is not a task name"):
            validate_config(_with_task(name))
    assert not marker.exists()


def test_the_harness_refuses_a_path_before_reading_any_yaml(planted, tmp_path):
    path, marker = planted
    for name in _path_names(path):
        with pytest.raises(TaskNameError, match="never a path"):
            evaluate(tmp_path / "no-model", [name], task_dir=DEFAULT_TASK_DIR, data_root=tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["gsm8k", "mmlu", "arc_easy", "wikitext", "leaderboard_bbh", "world_general",
                                  "arithmetic_1da_local", "mmlu_abstract_algebra", "hendrycks_math"])
def test_registered_and_shipped_names_are_tasks(name):
    check_task_name(name)
    assert unknown_task_message(name) is None


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/abs", "a\\b", "-x", "x y", "x\n", "gsm8k;rm"])
def test_names_that_could_point_anywhere_are_not_names(name):
    with pytest.raises(TaskNameError):
        check_task_name(name)


def test_a_near_miss_says_what_it_may_have_meant():
    assert "did you mean 'hellaswag'" in unknown_task_message("helaswag")
    assert "did you mean 'world_commonsense'" in unknown_task_message("world_comonsense")
    message = unknown_task_message("no_such_task_at_all")
    assert message.startswith("unknown task 'no_such_task_at_all': it is no YAML") and "did you mean" not in message
