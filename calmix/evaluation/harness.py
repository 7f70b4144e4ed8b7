"""Per-capability evaluation of dense and pruned models with lm-evaluation-harness.

Every capability dimension (general, commonsense, code, math) is one lm-eval task. The
study's own tasks live as YAML files in ``resources/lm_eval_tasks`` and read jsonl data
that another workflow stage writes. Their ``data_files`` paths are relative, and lm-eval
would resolve them against whatever the working directory happens to be, so
:func:`load_task_config` makes them absolute and the configs are handed to lm-eval as
dicts. Names without a YAML file fall through to lm-eval's built-in tasks (for studies
on real models).

A dimension's evaluation runs with that dimension's own settings (config
``evaluation.dimensions.<dim>``): shots (``task_num_fewshot`` per task, else ``num_fewshot`` for every
task, else each task's own YAML, as lm-eval's simple_evaluate takes it), ``limit`` items per task
and, per task, the ``metric`` key that stands for it (else :func:`_primary_metric`). Every task
summary records the shots it was scored with (``num_fewshot``).

Every task summary says how its score reads: ``higher_is_better`` (lm-eval's flag for the
metric) and ``aggregation``, "mean" (the score is the mean of the per-item scores) or
"perplexity" (word/byte perplexity: per item, ``score`` is the total log-likelihood and
``weight`` the count of words or bytes, and the task score is exp(-sum(score) / sum(weight))).

lm-eval, torch and transformers are imported inside the functions so that importing this
module stays cheap (Snakemake imports it while parsing the workflow).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from calmix.evaluation.scoring import (
    MetricError,
    as_float,
    group_summary,
    item_scores,
    leaf_summary,
    metric_error,
    metric_keys,
)
from calmix.evaluation.tasks import TaskConfigError, executes_code, lm_eval_version, load_task_config, task_yaml

log = logging.getLogger(__name__)

#: Built-in default for where the study's task YAMLs live, relative to the repository root.

@contextmanager
def _code_execution_allowed(allowed: bool) -> Iterator[None]:
    """HF_ALLOW_CODE_EVAL=1 while code-executing tasks run (lm-eval's code metrics and
    calmix.evaluation.code_exec refuse without it), the caller's value back afterwards."""
    if not allowed:
        yield
        return
    from calmix.evaluation.code_exec import ALLOW_ENV

    before = os.environ.get(ALLOW_ENV)
    os.environ[ALLOW_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ALLOW_ENV, None)
        else:
            os.environ[ALLOW_ENV] = before


def load_lm(model_path: str | Path, *, device: str = "cpu", batch_size: int = 32, dtype: str = "float32",
            model_manifest: str | None = None) -> Any:
    """lm-eval's HF model of a checkpoint, scoring each context once (calmix.evaluation.packed.PackedLM),
    after its weights are checked against ``model_manifest``."""
    from calmix.core.integrity import verify_checkpoint
    from calmix.evaluation import packed
    from calmix.models.folders import model_folder

    verify_checkpoint(model_path, model_manifest)
    return packed.PackedLM(pretrained=str(model_folder(model_path)), device=device, batch_size=batch_size, dtype=dtype)


def _run_lm_eval(lm: Any, task_manager: Any, tasks: list[Any], *, samples: dict[str, list[int]] | None, seed: int,
                 confirm_run_unsafe_code: bool) -> Any:
    """lm-eval's evaluate() with simple_evaluate's seeding (random, numpy, torch, few-shot draws).

    Not simple_evaluate itself: after scoring, it records the environment for its own results file,
    running `pip list` and `git` in subprocesses (about 0.5 s a call, 2 s a checkpoint of four
    dimensions), none of which calmix keeps.
    """
    import random

    import numpy as np
    import torch
    from lm_eval.evaluator import evaluate as lm_eval_evaluate

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    loaded = task_manager.load(tasks)
    for task in loaded["tasks"].values():
        task.set_fewshot_seed(seed=seed)
    return lm_eval_evaluate(lm=lm, task_dict=loaded, samples=samples, log_samples=True,
                            fewshot_as_multiturn=True, confirm_run_unsafe_code=confirm_run_unsafe_code)


def item_subset(leaf: str, n_docs: int, cap: int, seed: int) -> list[int]:
    """The doc ids a task is scored on when ``cap`` limits it: a seeded random subset (sorted), keyed by the
    task's name, so that every model of a study sees the same items whatever else it scores. Not lm-eval's
    ``limit``, which takes the first N: a split's first items are often of one kind (lm-eval issue #2598)."""
    import random

    if cap >= n_docs:
        return list(range(n_docs))
    return sorted(random.Random(f"calmix items {seed} {leaf}").sample(range(n_docs), cap))


def _shots_used(name: str, leaves: dict[str, Any], dimension: str | None) -> int:
    """The shots that go before each item of a task (0 for a rolling-likelihood task, which scores whole
    documents without them); a group's leaves must agree, so that one number describes the task."""
    used = {leaf: 0 if obj.get_config("output_type") == "loglikelihood_rolling" else int(obj.get_config("num_fewshot"))
            for leaf, obj in leaves.items()}
    if len(set(used.values())) > 1:
        where = f"config key 'evaluation.dimensions.{dimension}.task_num_fewshot'" if dimension else "task_num_fewshot"
        raise ValueError(
            f"lm-eval task {name!r}: its subtasks take different shots ({used}); set one number for it "
            f"({where}: {{{name}: N}}) or list its subtasks as tasks of their own"
        )
    return next(iter(used.values()))


def _check_shots(obj: Any, name: str, leaf: str, dimension: str | None, key: str) -> None:
    """The shots lm-eval will draw for a leaf task exist and never hold the item scored: lm-eval leaves
    the item out only when the few-shot split is the test split by name, and otherwise fails mid-run
    (``Sample larger than population``) when the shots outnumber their split."""
    shots = int(obj.get_config("num_fewshot") or 0)
    if not shots or obj.get_config("output_type") == "loglikelihood_rolling":
        return
    config, fewshot = obj.config, obj.fewshot_cfg
    if fewshot.split is None and getattr(fewshot, "samples", None) is not None:
        return  # fixed examples of the task's own
    scored = config.test_split if obj.has_test_docs() else config.validation_split
    drawn = fewshot.split or (config.training_split if obj.has_training_docs()
                              else config.validation_split if obj.has_validation_docs() else config.test_split)
    left_out = fewshot.split == config.test_split  # as lm-eval's ConfigurableTask.fewshot_context decides
    where = f"config key 'evaluation.dimensions.{dimension}.{key}'" if dimension else key
    if drawn == scored and not left_out:
        raise TaskConfigError(
            f"lm-eval task {leaf!r} ({name}): its {shots} shots would be drawn from the split it scores ({scored}) "
            f"without leaving the item out, so an item could be its own example; set 'fewshot_split: {scored}' "
            f"in its YAML (lm-eval then leaves the item out) or set {where} to 0"
        )
    pool = len(obj.fewshot_docs()) - (1 if drawn == scored else 0)
    if shots > pool:
        raise TaskConfigError(
            f"{where}: {shots} shots cannot be drawn for lm-eval task {leaf!r}, which draws each item's shots from "
            f"{pool} items of its {drawn} split; set it to at most {pool}"
        )


def evaluate(
    model_path: str | Path,
    tasks: list[str],
    *,
    task_dir: Path,
    data_root: Path,
    batch_size: int = 32,
    limit: int | None = None,
    task_limits: dict[str, int] | None = None,
    seed: int = 1234,
    device: str = "cpu",
    dtype: str = "float32",
    allow_code_execution: bool = False,
    num_fewshot: int | None = None,
    task_num_fewshot: dict[str, int] | None = None,
    metric: dict[str, str] | None = None,
    dimension: str | None = None,
    model_manifest: str | None = None,
    lm: Any = None,
) -> dict:
    """Score one model on each task with fixed seeds; JSON-serialisable result.

    Each task takes its own YAML's shots (0 where it names none), as lm-eval's simple_evaluate does,
    unless ``task_num_fewshot`` names it or ``num_fewshot`` is given: then that many go before every
    item (also where the YAML says otherwise); shots are drawn with ``seed``, and each task summary's
    ``num_fewshot`` says how many it was scored with. ``limit`` caps the items per task,
    ``task_limits`` per named task (a long-document task and a multiple-choice task in one dimension need
    different counts for the same cost); a capped task is scored on a seeded random subset of its items
    (:func:`item_subset`, passed to lm-eval as ``samples``), the same for every model; ``metric`` maps
    a task to the "metric,filter" key that stands for it instead of :func:`_primary_metric`. A key the
    task does not report is an error naming ``dimension`` (the config dimension, for messages).

    Tasks with a YAML in ``task_dir`` are passed to lm-eval as config dicts whose data
    paths point under ``data_root``; only when some name has no YAML is lm-eval's index of
    built-in tasks built (``include_defaults=True``, ~8 s). The same ``batch_size`` must be
    used for the dense model and its pruned variants: on GPUs, padding and batching shift
    scores slightly. ``model_manifest`` is the manifest the checkpoint must have
    (``prune_report.json`` for a pruned one, ``training.json`` for the world model): a folder
    without it is refused (calmix.models.loading.verify_checkpoint), never evaluated unchecked.
    ``lm`` is a model :func:`load_lm` already loaded (and checked) from model_path, so that one process
    scores several dimensions of a checkpoint with one load.
    """
    if not tasks:
        raise ValueError("evaluate: no tasks given")
    metric, task_limits, task_shots = dict(metric or {}), dict(task_limits or {}), dict(task_num_fewshot or {})
    for key, per_task in (("task_limits", task_limits), ("task_num_fewshot", task_shots)):
        if set(per_task) - set(tasks):
            raise TaskConfigError(f"{key} for {sorted(set(per_task) - set(tasks))} name no task of {tasks}")
    if set(metric) - set(tasks):
        raise MetricError(
            f"{f'dimension {dimension!r}: ' if dimension else ''}metric overrides for {sorted(set(metric) - set(tasks))} "
            f"name no task of {tasks}"
        )
    unsafe = [t for t in tasks if executes_code(t, task_dir)]
    if unsafe and not allow_code_execution:
        raise TaskConfigError(
            f"lm-eval tasks {unsafe} execute model-written code; pass allow_code_execution=True "
            "(config: evaluation.allow_code_execution: true) only where running untrusted code is acceptable"
        )
    if unsafe:
        log.warning("code execution: tasks %s run the code the model writes (evaluation.allow_code_execution "
                    "is true)", unsafe)
    from calmix.models.folders import model_folder

    model_path_str = str(model_folder(model_path))
    if (isinstance(model_path, Path) or Path(model_path_str).is_absolute()) and not Path(model_path_str).exists():
        raise FileNotFoundError(f"evaluate: model directory {model_path_str} does not exist")

    specs: dict[str, dict | str] = {}
    for task in tasks:
        if task_yaml(task, task_dir).is_file():
            specs[task] = load_task_config(task, task_dir, data_root)
        else:
            log.info("task %s has no YAML in %s; using lm-eval's built-in task", task, task_dir)
            specs[task] = task

    from lm_eval.api.group import Group
    from lm_eval.tasks import TaskManager

    needs_defaults = any(isinstance(s, str) for s in specs.values())
    task_manager = TaskManager(include_defaults=needs_defaults)

    # Build the tasks here (one spec at a time) rather than inside simple_evaluate, to
    # know which leaf tasks belong to which requested name, to check metric overrides
    # before the model loads, and to read their docs for the chance level afterwards.
    objects: list[Any] = []
    leaves_of: dict[str, dict[str, Any]] = {}
    shots: dict[str, int] = {}
    for name, spec in specs.items():
        if isinstance(spec, str) and spec not in task_manager.all_tasks:
            raise TaskConfigError(
                f"lm-eval task {name!r}: no task config {task_yaml(name, task_dir)} "
                "and no built-in lm-eval task, group or tag of that name"
            )
        loaded = task_manager.load([spec])
        leaves_of[name] = loaded["tasks"]
        group = loaded.get("groups", {}).get(name)
        if isinstance(group, Group):
            objects.append(group)
        else:
            objects.extend(loaded["tasks"].values())
        requested = task_shots.get(name, num_fewshot)
        for leaf, obj in leaves_of[name].items():
            if name in metric and metric[name] not in metric_keys(obj):
                raise metric_error(dimension, name, leaf, metric[name], metric_keys(obj), "lm-eval reports for it")
            if requested and obj.get_config("output_type") == "loglikelihood_rolling":
                log.warning("task %s scores whole documents (loglikelihood_rolling): no shots", leaf)
            if requested is not None:
                # simple_evaluate leaves a YAML's "num_fewshot: 0" alone; the study's setting wins here
                obj.set_config(key="num_fewshot", value=requested)
            elif obj.get_config("num_fewshot") is None:
                obj.set_config(key="num_fewshot", value=0)  # as simple_evaluate does
            _check_shots(obj, name, leaf, dimension,
                         "num_fewshot" if name not in task_shots and num_fewshot is not None else f"task_num_fewshot.{name}")
        shots[name] = _shots_used(name, leaves_of[name], dimension)

    caps = {name: task_limits.get(name, limit) for name in leaves_of}
    samples = {leaf: item_subset(leaf, len(obj.eval_docs), caps[name], seed)
               for name, leaves in leaves_of.items() for leaf, obj in leaves.items() if caps[name] is not None}

    if lm is None:
        lm = load_lm(model_path, device=device, batch_size=batch_size, dtype=dtype, model_manifest=model_manifest)
    with _code_execution_allowed(bool(unsafe)):
        results = _run_lm_eval(lm, task_manager, objects, samples=samples or None,
                               seed=seed, confirm_run_unsafe_code=allow_code_execution)
    if results is None:  # only rank 0 gets results
        raise RuntimeError("lm-eval returned no results (not the main process?)")

    summary: dict[str, dict] = {}
    items: list[dict] = []
    for name, leaves in leaves_of.items():
        leaf_summaries = {
            t: leaf_summary(t, obj, results, samples.get(t), metric.get(name), dimension, name) for t, obj in leaves.items()
        }
        task_items = []
        for leaf, s in leaf_summaries.items():
            task_items += item_scores(name, leaf, s["metric"], s["aggregation"], results,
                                      s["output_type"] == "multiple_choice")
        items += task_items
        if list(leaves) == [name]:
            summary[name] = leaf_summaries[name]
        else:
            summary[name] = group_summary(name, leaf_summaries, results, task_items)
        summary[name]["num_fewshot"] = shots[name]
        log.info(
            "%s: %s = %s (%s-shot, chance %s, n = %s)", name, summary[name]["metric"], summary[name]["score"],
            shots[name], summary[name]["chance"], summary[name]["n"],
        )

    versions = {k: (v if isinstance(v, (int, str)) else as_float(v)) for k, v in results.get("versions", {}).items()}
    return {
        "tasks": summary,
        "items": items,
        "settings": {
            "model_path": model_path_str,
            "batch_size": batch_size,
            "limit": limit,
            **({"task_limits": task_limits} if task_limits else {}),
            "seed": seed,
            "dtype": dtype,
            "device": device,
            "lm_eval_version": lm_eval_version(),
            "num_fewshot": num_fewshot,
            **({"task_num_fewshot": task_shots} if task_shots else {}),
            "metric": metric,
            "task_versions": versions,
        },
    }
