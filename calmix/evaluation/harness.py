"""Per-capability evaluation of dense and pruned models with lm-evaluation-harness.

Every capability dimension (general, commonsense, code, math) is one lm-eval task. The
study's own tasks live as YAML files in ``resources/lm_eval_tasks`` and read jsonl data
that another workflow stage writes. Their ``data_files`` paths are relative, and lm-eval
would resolve them against whatever the working directory happens to be, so
:func:`load_task_config` makes them absolute and the configs are handed to lm-eval as
dicts. Names without a YAML file fall through to lm-eval's built-in tasks (for studies
on real models).

A dimension's evaluation runs with that dimension's own settings (config
``evaluation.dimensions.<dim>``): ``num_fewshot`` shots for every task, ``limit`` items per task
and, per task, the ``metric`` key that stands for it (else :func:`_primary_metric`).

Every task summary says how its score reads: ``higher_is_better`` (lm-eval's flag for the
metric) and ``aggregation``, "mean" (the score is the mean of the per-item scores) or
"perplexity" (word/byte perplexity: per item, ``score`` is the total log-likelihood and
``weight`` the count of words or bytes, and the task score is exp(-sum(score) / sum(weight))).

lm-eval, torch and transformers are imported inside the functions so that importing this
module stays cheap (Snakemake imports it while parsing the workflow).
"""

from __future__ import annotations

import glob
import logging
import math
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Built-in default for where the study's task YAMLs live, relative to the repository root.
DEFAULT_TASK_DIR = Path(__file__).resolve().parents[2] / "resources" / "lm_eval_tasks"

_GLOB_CHARS = set("*?[")


#: lm-eval task families that execute model-written code (their YAMLs say ``unsafe_code: true``).
CODE_EXECUTING_TASKS = ("humaneval", "mbpp", "cruxeval", "longproc_pseudo_to_code")


class TaskConfigError(FileNotFoundError):
    """A task's YAML or one of its data files is missing."""


class MetricError(ValueError):
    """A dimension asks for a metric key its task does not report."""


def _task_yaml(task: str, task_dir: Path) -> Path:
    return Path(task_dir) / f"{task}.yaml"


def _declares_unsafe_code(yaml_path: Path, seen: frozenset = frozenset()) -> bool:
    """Whether a task YAML (or one it includes) says ``unsafe_code: true``; read as plain data,
    with ``!function`` tags left unresolved, so nothing is imported."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    config = yaml.load(yaml_path.read_text(), Loader=Loader) or {}  # noqa: S506 (a SafeLoader)
    if config.get("unsafe_code") is True:
        return True
    includes = config.get("include") or []
    for inc in includes if isinstance(includes, list) else [includes]:
        path = (yaml_path.parent / inc).resolve()
        if path not in seen and path.is_file() and _declares_unsafe_code(path, seen | {path}):
            return True
    return False


def executes_code(task: str, task_dir: Path = DEFAULT_TASK_DIR) -> bool:
    """Whether an lm-eval task runs the code the model writes (needs evaluation.allow_code_execution):
    one of lm-eval's code families, or a task of ``task_dir`` whose YAML says ``unsafe_code: true``."""
    yaml_path = _task_yaml(task, task_dir)
    return task.startswith(CODE_EXECUTING_TASKS) or (yaml_path.is_file() and _declares_unsafe_code(yaml_path))


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
    yaml_path = _task_yaml(task, task_dir)
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


def _as_float(value: Any) -> float | None:
    """numpy scalars -> float; lm-eval's "N/A" stderr and NaN -> None (valid JSON)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _primary_metric(task_obj: Any) -> str:
    """The "metric,filter" key that stands for a task's capability score.

    Multiple choice: ``acc,none``. Generation: the first metric of the config under the
    first filter pipeline (``exact_match,strip`` for world_code,
    ``exact_match,strict-match`` for world_math and gsm8k).
    """
    metrics = list(getattr(task_obj, "_metric_fn_list", {}).keys())
    filters = [f.name for f in getattr(task_obj, "_filters", [])] or ["none"]
    output_type = task_obj.get_config("output_type")
    if output_type == "multiple_choice" and "acc" in metrics:
        return "acc,none"
    metric = metrics[0] if metrics else ("acc" if output_type == "multiple_choice" else "exact_match")
    return f"{metric},{filters[0]}"


def _metric_keys(task_obj: Any) -> list[str]:
    """The "metric,filter" keys lm-eval will report for a task: each metric under each filter."""
    filters = [f.name for f in getattr(task_obj, "_filters", [])] or ["none"]
    return [f"{m},{f}" for f in filters for m in getattr(task_obj, "_metric_fn_list", {})]


def _returned_keys(res: dict) -> list[str]:
    return [k for k in res if "," in k and "_stderr," not in k]


def _metric_error(
    dimension: str | None, task: str, leaf: str, requested: str, available: list[str], source: str
) -> MetricError:
    where = f"dimension {dimension!r}, " if dimension else ""
    sub = f" (subtask {leaf!r})" if leaf != task else ""
    key = f"config key 'evaluation.dimensions.{dimension}.metric.{task}'" if dimension else "metric override"
    return MetricError(
        f"{where}task {task!r}{sub}: metric {requested!r} ({key}) is not among the keys {source}: "
        f"{', '.join(available) or 'none'}"
    )


def _aggregation(task_obj: Any, metric: str) -> str:
    """'perplexity' for metrics lm-eval aggregates as a (weighted) perplexity, else 'mean'."""
    from lm_eval.api import metrics as lm_metrics

    fn = task_obj.aggregation().get(metric.partition(",")[0])
    if fn in (lm_metrics.weighted_perplexity, lm_metrics.perplexity):
        return "perplexity"
    if fn is not lm_metrics.mean:
        log.warning(
            "metric %s aggregates by %s, not a mean: its per-item scores do not average to the task score",
            metric, getattr(fn, "__name__", fn),
        )
    return "mean"


def _chance(task_obj: Any, limit: int | None) -> float | None:
    """Expected score of random guessing over the evaluated docs.

    Mean of 1/num_choices for multiple choice (choice counts may vary per doc), 0 for
    exact-match generation, None where no meaningful baseline exists.
    """
    output_type = task_obj.get_config("output_type")
    if output_type == "generate_until":
        return 0.0
    if output_type != "multiple_choice":
        return None
    probs = [1.0 / len(task_obj.doc_to_choice(doc)) for _, doc in task_obj.doc_iterator(limit=limit)]
    return sum(probs) / len(probs) if probs else None


def _leaf_summary(
    name: str,
    task_obj: Any,
    results: dict,
    limit: int | None,
    requested: str | None = None,
    dimension: str | None = None,
    task: str | None = None,
) -> dict:
    """One leaf task's score under ``requested`` (a dimension's metric override) or its primary metric."""
    metric = requested or _primary_metric(task_obj)
    res = results["results"].get(name, {})
    if metric not in res:
        candidates = _returned_keys(res)
        if requested:
            raise _metric_error(dimension, task or name, name, requested, candidates, "lm-eval returned")
        if not candidates:
            raise KeyError(f"lm-eval returned no metrics for task {name!r}: {sorted(res)}")
        log.warning("task %s: metric %s not in results %s; using %s", name, metric, candidates, candidates[0])
        metric = candidates[0]
    stderr_key = metric.replace(",", "_stderr,", 1)
    n_samples = results.get("n-samples", {}).get(name, {})
    n = n_samples.get("effective", n_samples.get("original"))
    aggregation = _aggregation(task_obj, metric)
    metric_name = metric.partition(",")[0]
    higher = results.get("higher_is_better", {}).get(name, {}).get(metric_name)
    if higher is None:
        higher = task_obj.higher_is_better().get(metric_name, True)
    return {
        "metric": metric,
        "score": _as_float(res[metric]),
        "stderr": _as_float(res.get(stderr_key)),
        "chance": None if aggregation == "perplexity" else _chance(task_obj, limit),
        "n": int(n) if n is not None else None,
        "output_type": task_obj.get_config("output_type"),
        "higher_is_better": bool(higher),
        "aggregation": aggregation,
    }


def _item_scores(task: str, leaf: str, metric: str, aggregation: str, results: dict) -> list[dict]:
    """Per-item scores of one leaf task under its metric ('acc,none' -> 'acc' of filter 'none'), so
    that dense and pruned scores can be paired by doc_id and bootstrapped.

    Mean-aggregated metrics: the item's score, weight 1. Perplexity metrics: lm-eval logs a
    (log-likelihood, words or bytes) pair per item, kept as score and weight, so that
    exp(-sum(score) / sum(weight)) is the task's perplexity (plain ``perplexity`` logs only the
    log-likelihood: weight 1).
    """
    name, _, filter_name = metric.partition(",")
    rows = []
    for sample in results.get("samples", {}).get(leaf, []):
        if sample.get("filter", "none") == filter_name and name in sample:
            value = sample[name]
            if isinstance(value, (tuple, list)):
                if aggregation != "perplexity" or len(value) != 2:
                    raise MetricError(
                        f"task {leaf!r}: metric {metric!r} logs per-item pairs but is not aggregated as a "
                        "perplexity; calmix keeps mean and perplexity metrics (e.g. word_perplexity, not bits_per_byte)"
                    )
                score, weight = value
            else:
                score, weight = value, 1.0
            rows.append({
                "task": task, "leaf": leaf, "doc_id": int(sample["doc_id"]),
                "score": float(score), "weight": float(weight),
            })
    if not rows:
        raise KeyError(f"lm-eval logged no per-item {metric!r} for task {leaf!r}")
    return sorted(rows, key=lambda r: r["doc_id"])


def _group_summary(name: str, leaves: dict[str, dict], results: dict, items: list[dict]) -> dict:
    """Summarise a built-in group or tag (e.g. mmlu) by its leaf tasks.

    Mean metrics: lm-eval's own aggregate when it reports the leaves' metric, otherwise the
    doc-weighted mean of the leaves (tags have no aggregate of their own). Perplexity metrics:
    the perplexity pooled over every item of every leaf, exp(-sum(score) / sum(weight)).
    """
    first = next(iter(leaves.values()))
    metric, aggregation = first["metric"], first["aggregation"]
    if any(s["aggregation"] != aggregation for s in leaves.values()):
        raise MetricError(f"task {name!r}: its subtasks mix mean and perplexity metrics; evaluate them separately")
    total = sum(s["n"] or 0 for s in leaves.values())

    def weighted(key: str) -> float | None:
        vals = [(s[key], s["n"] or 0) for s in leaves.values()]
        if total == 0 or any(v is None for v, _ in vals):
            return None
        return sum(v * w for v, w in vals) / total

    res = results["results"].get(name, {})
    if aggregation == "perplexity":
        weight = sum(r["weight"] for r in items)
        score, stderr = (math.exp(-sum(r["score"] for r in items) / weight) if weight else None), None
    else:
        score, stderr = _as_float(res.get(metric)), _as_float(res.get(metric.replace(",", "_stderr,", 1)))
        if score is None:
            score, stderr = weighted("score"), None
    return {
        "metric": metric,
        "score": score,
        "stderr": stderr,
        "chance": None if aggregation == "perplexity" else weighted("chance"),
        "n": total,
        "output_type": first["output_type"],
        "subtasks": sorted(leaves),
        "higher_is_better": first["higher_is_better"],
        "aggregation": aggregation,
    }


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


def evaluate(
    model_path: str | Path,
    tasks: list[str],
    *,
    task_dir: Path,
    data_root: Path,
    batch_size: int = 32,
    limit: int | None = None,
    seed: int = 1234,
    device: str = "cpu",
    dtype: str = "float32",
    allow_code_execution: bool = False,
    num_fewshot: int = 0,
    metric: dict[str, str] | None = None,
    dimension: str | None = None,
    model_manifest: str | None = None,
) -> dict:
    """Score one model on each task with fixed seeds; JSON-serialisable result.

    ``num_fewshot`` shots go before every item of every task (also where a task's YAML says
    otherwise), drawn with ``seed``; ``limit`` caps the items per task; ``metric`` maps a task
    to the "metric,filter" key that stands for it instead of :func:`_primary_metric`. A key the
    task does not report is an error naming ``dimension`` (the config dimension, for messages).

    Tasks with a YAML in ``task_dir`` are passed to lm-eval as config dicts whose data
    paths point under ``data_root``; only when some name has no YAML is lm-eval's index of
    built-in tasks built (``include_defaults=True``, ~8 s). The same ``batch_size`` must be
    used for the dense model and its pruned variants: on GPUs, padding and batching shift
    scores slightly. ``model_manifest`` is the manifest the checkpoint must have
    (``prune_report.json`` for a pruned one, ``training.json`` for the world model): a folder
    without it is refused (calmix.models.loading.verify_checkpoint), never evaluated unchecked.
    """
    if not tasks:
        raise ValueError("evaluate: no tasks given")
    metric = dict(metric or {})
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
    from calmix.fetch.hub import model_folder
    from calmix.models.loading import verify_checkpoint

    model_path_str = str(model_folder(model_path))
    if (isinstance(model_path, Path) or Path(model_path_str).is_absolute()) and not Path(model_path_str).exists():
        raise FileNotFoundError(f"evaluate: model directory {model_path_str} does not exist")

    specs: dict[str, dict | str] = {}
    for task in tasks:
        if _task_yaml(task, task_dir).is_file():
            specs[task] = load_task_config(task, task_dir, data_root)
        else:
            log.info("task %s has no YAML in %s; using lm-eval's built-in task", task, task_dir)
            specs[task] = task

    import lm_eval
    from lm_eval.api.group import Group
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    needs_defaults = any(isinstance(s, str) for s in specs.values())
    task_manager = TaskManager(include_defaults=needs_defaults)

    # Build the tasks here (one spec at a time) rather than inside simple_evaluate, to
    # know which leaf tasks belong to which requested name, to check metric overrides
    # before the model loads, and to read their docs for the chance level afterwards.
    objects: list[Any] = []
    leaves_of: dict[str, dict[str, Any]] = {}
    for name, spec in specs.items():
        if isinstance(spec, str) and spec not in task_manager.all_tasks:
            raise TaskConfigError(
                f"lm-eval task {name!r}: no task config {_task_yaml(name, task_dir)} "
                "and no built-in lm-eval task, group or tag of that name"
            )
        loaded = task_manager.load([spec])
        leaves_of[name] = loaded["tasks"]
        group = loaded.get("groups", {}).get(name)
        if isinstance(group, Group):
            objects.append(group)
        else:
            objects.extend(loaded["tasks"].values())
        for leaf, obj in leaves_of[name].items():
            if name in metric and metric[name] not in _metric_keys(obj):
                raise _metric_error(dimension, name, leaf, metric[name], _metric_keys(obj), "lm-eval reports for it")
            if num_fewshot and obj.get_config("output_type") == "loglikelihood_rolling":
                log.warning("task %s scores whole documents (loglikelihood_rolling): no shots", leaf)
            # simple_evaluate leaves a YAML's "num_fewshot: 0" alone; the dimension's setting wins here
            obj.set_config(key="num_fewshot", value=num_fewshot)

    verify_checkpoint(model_path, model_manifest)
    lm = HFLM(pretrained=model_path_str, device=device, batch_size=batch_size, dtype=dtype)
    with _code_execution_allowed(bool(unsafe)):
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=objects,
            task_manager=task_manager,
            num_fewshot=num_fewshot,
            limit=limit,
            log_samples=True,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            confirm_run_unsafe_code=allow_code_execution,
        )
    if results is None:  # only rank 0 gets results
        raise RuntimeError("lm-eval returned no results (not the main process?)")

    summary: dict[str, dict] = {}
    items: list[dict] = []
    for name, leaves in leaves_of.items():
        leaf_summaries = {
            t: _leaf_summary(t, obj, results, limit, metric.get(name), dimension, name) for t, obj in leaves.items()
        }
        task_items = []
        for leaf, s in leaf_summaries.items():
            task_items += _item_scores(name, leaf, s["metric"], s["aggregation"], results)
        items += task_items
        if list(leaves) == [name]:
            summary[name] = leaf_summaries[name]
        else:
            summary[name] = _group_summary(name, leaf_summaries, results, task_items)
        log.info(
            "%s: %s = %s (chance %s, n = %s)",
            name, summary[name]["metric"], summary[name]["score"], summary[name]["chance"], summary[name]["n"],
        )

    versions = {k: (v if isinstance(v, (int, str)) else _as_float(v)) for k, v in results.get("versions", {}).items()}
    return {
        "tasks": summary,
        "items": items,
        "settings": {
            "model_path": model_path_str,
            "batch_size": batch_size,
            "limit": limit,
            "seed": seed,
            "dtype": dtype,
            "device": device,
            "lm_eval_version": _lm_eval_version(),
            "num_fewshot": num_fewshot,
            "metric": metric,
            "task_versions": versions,
        },
    }


def _lm_eval_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("lm_eval", "lm-eval"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def builtin_tasks(tasks: list[str], task_dir: Path) -> list[str]:
    """The tasks that are lm-eval's own (no YAML of calmix's): their data comes from the hub."""
    return [t for t in tasks if not _task_yaml(t, task_dir).is_file()]


def fetch_task_data(tasks: list[str]) -> dict:
    """Download the datasets of lm-eval's built-in ``tasks`` into the Hugging Face cache, so that
    evaluation jobs can run offline; returns what was fetched (task -> dataset, config, revision).

    Without network it checks the cache instead and raises :class:`calmix.fetch.hub.HubUnreachable`
    at once when a dataset is missing there.
    """
    from lm_eval.tasks import TaskManager

    from calmix.fetch import hub

    reason = hub.unreachable_reason()
    task_manager = TaskManager(include_defaults=True)
    unknown = [t for t in tasks if t not in task_manager.all_tasks]
    if unknown:
        raise TaskConfigError(f"lm-eval has no task {unknown[0]!r} (tasks asked for: {', '.join(tasks)})")
    fetched: dict[str, Any] = {}
    with hub.offline(reason is not None):
        for task in tasks:
            try:
                loaded = task_manager.load([task])["tasks"]
            except Exception as e:
                if reason is None:
                    raise
                raise hub.HubUnreachable(
                    f"the data of lm-eval task {task!r} is not in the local cache ({type(e).__name__}) and {reason}"
                ) from e
            for leaf, obj in loaded.items():
                cfg = obj.config
                fetched[leaf] = {
                    "dataset": cfg.dataset_path,
                    "config": cfg.dataset_name,
                    "revision": (cfg.dataset_kwargs or {}).get("revision"),
                }
    return {"tasks": tasks, "leaves": fetched, "lm_eval": _lm_eval_version()}


#: Columns of the per-item parquet file, in order.
ITEM_COLUMNS = ("task", "leaf", "doc_id", "score", "weight")


def write_items(items: list[dict], path: str | Path) -> None:
    """Per-item scores as zstd parquet, written atomically: task, leaf, doc_id, score and weight
    (1.0 for mean-aggregated tasks; the word or byte count for perplexity tasks, whose score is
    the item's total log-likelihood). Items without a weight get 1.0."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from calmix.core.io import atomic_path

    types = {"task": pa.string(), "leaf": pa.string(), "doc_id": pa.int64(), "score": pa.float64(), "weight": pa.float64()}
    table = pa.table({
        k: pa.array([r.get(k, 1.0) if k == "weight" else r[k] for r in items], types[k]) for k in ITEM_COLUMNS
    })
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_items(path: str | Path):
    """The per-item scores of one evaluation as a DataFrame (task, leaf, doc_id, score, weight).

    Files written before the weight column existed (mean-aggregated tasks only) read with weight 1.0.
    """
    import pandas as pd

    frame = pd.read_parquet(path)
    if "weight" not in frame:
        frame["weight"] = 1.0
    return frame[list(ITEM_COLUMNS)]
