"""lm-eval tasks as data: the study's own task YAMLs (resources/lm_eval_tasks) made loadable from any
working directory, which tasks execute model-written code, and which names are lm-eval built-ins.
Nothing heavy is imported at module level: the config check reads this while the workflow parses."""

from __future__ import annotations

import difflib
import functools
import glob
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DEFAULT_TASK_DIR = Path(__file__).resolve().parents[2] / "resources" / "lm_eval_tasks"

_GLOB_CHARS = set("*?[")


#: lm-eval task families that execute model-written code (their YAMLs say ``unsafe_code: true``).
CODE_EXECUTING_TASKS = ("humaneval", "mbpp", "cruxeval", "longproc_pseudo_to_code")


#: A task name: letters, digits, '_', '.' and '-', as lm-eval names its tasks, groups and tags; never a path.
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class TaskConfigError(FileNotFoundError):
    """A task's YAML or one of its data files is missing."""


class TaskNameError(ValueError):
    """A task name that is not a name (a path, say): no YAML is read for it."""


def check_task_name(task: str) -> None:
    """Refuse a task that names a path: a task YAML can import Python (``!function``) and lm-eval
    renders its templates unsandboxed, so YAMLs are read only from the project's task folder."""
    if not isinstance(task, str) or not TASK_NAME.fullmatch(task):
        raise TaskNameError(f"{task!r} is not a task name: a task is a YAML of resources/lm_eval_tasks or a task, group "
                            "or tag lm-eval registers, named by letters, digits, '_', '.' and '-' (never a path)")


def task_yaml(task: str, task_dir: Path) -> Path:
    check_task_name(task)
    return Path(task_dir) / f"{task}.yaml"


def shipped_tasks(task_dir: Path = DEFAULT_TASK_DIR) -> list[str]:
    return sorted(p.stem for p in Path(task_dir).glob("*.yaml"))


@functools.lru_cache(maxsize=1)
def _scanned_lm_eval_names() -> frozenset[str]:
    """The task, group and tag names lm-eval's own YAMLs declare, read as text (a second or two; nothing
    is imported or executed): the fast answer to "does lm-eval register this name?"."""
    import importlib.util

    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    declared = re.compile(r"^(?:task|group|tag)\s*:\s*['\"]?([A-Za-z0-9][A-Za-z0-9_.-]*)['\"]?\s*(?:#.*)?$", re.M)
    listed = re.compile(r"^tag\s*:\s*\n((?:\s+-\s*\S+\s*\n?)+)", re.M)
    names: set[str] = set()
    for path in Path(spec.submodule_search_locations[0], "tasks").rglob("*.yaml"):
        text = path.read_text(encoding="utf-8", errors="replace")
        names.update(declared.findall(text))
        for block in listed.findall(text):
            names.update(re.findall(r"-\s*['\"]?([A-Za-z0-9][A-Za-z0-9_.-]*)", block))
    return frozenset(names)


@functools.lru_cache(maxsize=1)
def _registered_lm_eval_names() -> frozenset[str]:
    """Every name lm-eval's task index registers (exact, slower: it parses every YAML)."""
    from lm_eval.tasks import TaskManager

    return frozenset(TaskManager().all_tasks)


def unknown_task_message(task: str, task_dir: Path = DEFAULT_TASK_DIR) -> str | None:
    """None for a task of ``task_dir`` or one lm-eval registers; else why not, with the nearest names
    (a name that is no name raises TaskNameError, from task_yaml)."""
    if task_yaml(task, task_dir).is_file() or task in _scanned_lm_eval_names() or task in _registered_lm_eval_names():
        return None
    known = [*shipped_tasks(task_dir), *sorted(_registered_lm_eval_names())]
    near = difflib.get_close_matches(task, known, n=3, cutoff=0.75)
    hint = f" (did you mean {' or '.join(map(repr, near))}?)" if near else ""
    return (f"unknown task {task!r}{hint}: it is no YAML of resources/lm_eval_tasks ({', '.join(shipped_tasks(task_dir))}) "
            f"and no task, group or tag of lm-eval {lm_eval_version()}")


def _plain_yaml(yaml_path: Path) -> dict:
    """A task YAML as plain data, with ``!function`` tags left unresolved, so nothing is imported."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    return yaml.load(yaml_path.read_text(), Loader=Loader) or {}  # noqa: S506 (a SafeLoader)


def _declares_unsafe_code(yaml_path: Path, seen: frozenset = frozenset()) -> bool:
    """Whether a task YAML (or one it includes) says ``unsafe_code: true``."""
    config = _plain_yaml(yaml_path)
    if config.get("unsafe_code") is True:
        return True
    includes = config.get("include") or []
    for inc in includes if isinstance(includes, list) else [includes]:
        path = (yaml_path.parent / inc).resolve()
        if path not in seen and path.is_file() and _declares_unsafe_code(path, seen | {path}):
            return True
    return False


def items_spec(task: str, task_dir: Path = DEFAULT_TASK_DIR) -> dict | None:
    """The ``metadata.calmix_items`` of a task YAML: the builder that writes its items offline
    (calmix.evaluation.offline), or None for tasks whose data comes from elsewhere."""
    yaml_path = task_yaml(task, task_dir)
    if not yaml_path.is_file():
        return None
    return (_plain_yaml(yaml_path).get("metadata") or {}).get("calmix_items")


def heldout_text_tasks(tasks: Iterable[str], task_dir: Path = DEFAULT_TASK_DIR) -> list[str]:
    """The tasks of ``task_dir`` that score held-out text by rolling log-likelihood (perplexity):
    calmix writes their documents, and rule heldout_check proves no calibration source holds one."""
    return [t for t in tasks if task_yaml(t, task_dir).is_file()
            and _plain_yaml(task_yaml(t, task_dir)).get("output_type") == "loglikelihood_rolling"]


def executes_code(task: str, task_dir: Path = DEFAULT_TASK_DIR) -> bool:
    """Whether an lm-eval task runs the code the model writes (needs evaluation.allow_code_execution):
    a task of ``task_dir`` whose YAML says ``unsafe_code: true``, or one of lm-eval's code families."""
    yaml_path = task_yaml(task, task_dir)
    if yaml_path.is_file():
        return _declares_unsafe_code(yaml_path)
    return task.startswith(CODE_EXECUTING_TASKS)


def _absolute_data_files(value: Any, data_root: Path) -> Any:
    """Rewrite each relative path in a ``data_files`` value (str, list or split dict)."""
    if isinstance(value, dict):
        return {split: _absolute_data_files(v, data_root) for split, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_absolute_data_files(v, data_root) for v in value]
    if isinstance(value, (str, Path)):
        path = Path(value).expanduser()
        if "://" in str(value):
            return str(value)
        if path.is_absolute():
            return str(path)
        return str((Path(data_root) / path).resolve())
    return value


def _iter_paths(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _iter_paths(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _iter_paths(v)
    elif isinstance(value, (str, Path)):
        yield str(value)


def load_task_config(task: str, task_dir: Path, data_root: Path) -> dict:
    """Read ``task_dir/<task>.yaml`` with its data paths made absolute under ``data_root``.

    lm-eval hands ``dataset_kwargs.data_files`` to ``datasets.load_dataset`` unchanged, so
    a relative path would be looked up in the current working directory; anchoring it at
    ``data_root`` makes the result independent of where the workflow runs. Missing files
    are reported here, naming the task, instead of as a ``datasets`` error deep inside
    lm-eval. The YAML is read with lm-eval's own loader so ``include:`` and ``!function``
    keep working.
    """
    yaml_path = task_yaml(task, task_dir)
    if not yaml_path.is_file():
        raise TaskConfigError(f"lm-eval task {task!r}: no task config {yaml_path}")

    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(yaml_path, resolve_func=True, recursive=True)
    name = config.get("task")
    if name != task:
        raise ValueError(f"lm-eval task {task!r}: {yaml_path} defines task {name!r}, expected {task!r}")

    dataset_kwargs = dict(config.get("dataset_kwargs") or {})
    if "data_files" in dataset_kwargs:
        data_files = _absolute_data_files(dataset_kwargs["data_files"], data_root)
        for path in _iter_paths(data_files):
            if "://" in path:
                continue
            found = glob.glob(path) if _GLOB_CHARS & set(path) else [path] if Path(path).is_file() else []
            if not found:
                raise TaskConfigError(
                    f"lm-eval task {task!r}: data file {path} is missing "
                    f"(data_files of {yaml_path}, resolved under {data_root})"
                )
        dataset_kwargs["data_files"] = data_files
        config["dataset_kwargs"] = dataset_kwargs
    return config


def lm_eval_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("lm_eval", "lm-eval"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def builtin_tasks(tasks: list[str], task_dir: Path) -> list[str]:
    """The tasks that are lm-eval's own (no YAML of calmix's): their data comes from the hub."""
    return [t for t in tasks if not task_yaml(t, task_dir).is_file()]
