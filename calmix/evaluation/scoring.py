"""Which number stands for a task (its metric, aggregation and chance level) and the per-item scores
behind it, read from lm-eval's results: every task summary says how its score reads."""

from __future__ import annotations

import logging
import math
from typing import Any

log = logging.getLogger(__name__)

class MetricError(ValueError):
    """A dimension asks for a metric key its task does not report."""


def as_float(value: Any) -> float | None:
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


def metric_keys(task_obj: Any) -> list[str]:
    """The "metric,filter" keys lm-eval will report for a task: each metric under each filter."""
    filters = [f.name for f in getattr(task_obj, "_filters", [])] or ["none"]
    return [f"{m},{f}" for f in filters for m in getattr(task_obj, "_metric_fn_list", {})]


def _returned_keys(res: dict) -> list[str]:
    return [k for k in res if "," in k and "_stderr," not in k]


def metric_error(
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


def _chance(task_obj: Any, doc_ids: list[int] | None) -> float | None:
    """Expected score of random guessing over the evaluated docs.

    Mean of 1/num_choices for multiple choice (choice counts may vary per doc), 0 for
    exact-match generation, None where no meaningful baseline exists.
    """
    output_type = task_obj.get_config("output_type")
    if output_type == "generate_until":
        return 0.0
    if output_type != "multiple_choice":
        return None
    docs = task_obj.eval_docs
    probs = [1.0 / len(task_obj.doc_to_choice(docs[i])) for i in (range(len(docs)) if doc_ids is None else doc_ids)]
    return sum(probs) / len(probs) if probs else None


def leaf_summary(
    name: str,
    task_obj: Any,
    results: dict,
    doc_ids: list[int] | None,
    requested: str | None = None,
    dimension: str | None = None,
    task: str | None = None,
) -> dict:
    """One leaf task's score under ``requested`` (a dimension's metric override) or its primary metric;
    ``doc_ids``: the items scored (None: all)."""
    metric = requested or _primary_metric(task_obj)
    res = results["results"].get(name, {})
    if metric not in res:
        candidates = _returned_keys(res)
        if requested:
            raise metric_error(dimension, task or name, name, requested, candidates, "lm-eval returned")
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
        "score": as_float(res[metric]),
        "stderr": as_float(res.get(stderr_key)),
        "chance": None if aggregation == "perplexity" else _chance(task_obj, doc_ids),
        "n": int(n) if n is not None else None,
        "output_type": task_obj.get_config("output_type"),
        "higher_is_better": bool(higher),
        "aggregation": aggregation,
    }


def item_scores(task: str, leaf: str, metric: str, aggregation: str, results: dict,
                multiple_choice: bool = False) -> list[dict]:
    """Per-item scores of one leaf task under its metric ('acc,none' -> 'acc' of filter 'none'), so
    that dense and pruned scores can be paired by doc_id and bootstrapped.

    A multiple-choice item also keeps ``gold_prob``, the gold choice's probability normalised over the
    choices (softmax of their log-likelihoods): a continuous score beside accuracy, which moves with
    every pruned weight where accuracy only moves when the argmax flips.

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
                **({"gold_prob": gold_probability(sample)} if multiple_choice else {}),
            })
    if not rows:
        raise KeyError(f"lm-eval logged no per-item {metric!r} for task {leaf!r}")
    return sorted(rows, key=lambda r: r["doc_id"])


def gold_probability(sample: dict) -> float:
    """The gold choice's probability among the choices of a logged multiple-choice sample (NaN where
    the gold is not one index, e.g. several correct choices)."""
    lls = [float(r[0]) for r in sample["filtered_resps"]]
    target = sample.get("target")
    if not isinstance(target, int) or not 0 <= target < len(lls):
        return math.nan
    top = max(lls)
    return math.exp(lls[target] - top) / sum(math.exp(ll - top) for ll in lls)


def group_summary(name: str, leaves: dict[str, dict], results: dict, items: list[dict]) -> dict:
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
        score, stderr = as_float(res.get(metric)), as_float(res.get(metric.replace(",", "_stderr,", 1)))
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
