"""Retention point estimates: how much of its dense model each pruned checkpoint keeps.

Why a module of its own: every later table (intervals, comparisons, correlations, the report) starts
from the pairing done here, each pruned eval record with the dense record of the same model and
dimension, checked to be scored alike, so a mismatch fails once, naming the records, instead of
turning into a wrong ratio downstream. It computes exactly the definitions of
docs/definitions.md#retention: docs/definitions.md#task-retention, #dimension-retention,
#total-retention and #chance-adjusted-retention; calmix.analysis.intervals adds the bootstrap
intervals around them.

Tables name a pruning setting (model, method, target). ``target`` is the pruning target's label as
the eval record holds it under its key "sparsity": an unstructured sparsity ("0.6") or an N:M
pattern ("2:4"); see docs/definitions.md#pruning-targets. ``method`` is the pruned set's label, which
names a non-uniform sparsity profile too ("wanda-owl"; docs/definitions.md#owl).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

DENSE = "dense"
TOTAL = "total"
#: The eval record's key for the pruning target label (the tables call it ``target``).
TARGET_KEY = "sparsity"
KEYS = ["model", "method", "target", "calib", "seed"]
GROUP = ["model", "method", "target"]
SET = [*GROUP, "calib"]
VALUES = ("retention", "chance_adjusted")
RETENTION_COLUMNS = [
    *KEYS, "level", "name", "dimension", "metric", "num_fewshot",
    "score", "dense_score", "chance", "retention", "chance_adjusted",
]

_REQUIRED_RECORD_KEYS = ("model", "method", TARGET_KEY, "calib", "seed", "dimension", "tasks")
_REQUIRED_TASK_KEYS = ("metric", "num_fewshot", "score", "chance", "higher_is_better", "aggregation")


def record_key(rec: dict) -> tuple:
    """The KEYS tuple of an eval record: (model, method, target, calib, seed)."""
    return rec["model"], rec["method"], rec[TARGET_KEY], rec["calib"], rec["seed"]


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------

def items_path(scores_path: str | os.PathLike) -> Path:
    """The per-item file written beside an eval record: general.json -> general.items.parquet."""
    path = Path(scores_path)
    return path.with_name(path.name.removesuffix(".json") + ".items.parquet")


def load_eval_records(paths: str | os.PathLike | Iterable[str | os.PathLike], *,
                      items: bool = False) -> list[dict]:
    """Read eval-record JSON files, failing early (naming the file) on a malformed one.

    Order is preserved; it decides the order of dimensions and tasks in the tables. With
    ``items=True`` each record also gets its per-item scores under "items" (a DataFrame), read from
    the ``.items.parquet`` beside it.
    """
    from calmix.evaluation.items import read_items

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
        if not isinstance(record, dict):
            raise ValueError(f"{path}: eval record is not a JSON object")
        missing = [k for k in _REQUIRED_RECORD_KEYS if k not in record]
        if missing:
            raise ValueError(f"{path}: eval record lacks keys {missing}")
        if not isinstance(record[TARGET_KEY], str):
            raise ValueError(f"{path}: eval record's {TARGET_KEY!r} is {record[TARGET_KEY]!r}, not a target "
                             "label such as '0.6' or '2:4'")
        if not isinstance(record["tasks"], dict) or not record["tasks"]:
            raise ValueError(f"{path}: eval record has no tasks")
        for task, entry in record["tasks"].items():
            lacking = [k for k in _REQUIRED_TASK_KEYS if k not in entry]
            if lacking:
                raise ValueError(f"{path}: task {task!r} lacks keys {lacking}")
        record["path"] = str(path)
        if items:
            per_item = items_path(path)
            if not per_item.is_file():
                raise FileNotFoundError(f"{per_item}: per-item scores of {path} are missing; rerun its "
                                        "evaluation (snakemake --forcerun on that file)")
            record["items"] = read_items(per_item)
        records.append(record)
    return records


def prune_report_path(scores_path: str | os.PathLike) -> Path:
    """The prune report of the checkpoint an eval record scored: results/eval/<checkpoint>/<dim>.json ->
    results/prune_reports/<checkpoint>.json (kept when the checkpoint itself is temporary)."""
    checkpoint = Path(scores_path).parent
    parts = checkpoint.parts
    at = len(parts) - 1 - parts[::-1].index("eval")
    return Path(*parts[:at], "prune_reports", *parts[at + 1:-1], parts[-1] + ".json")


def check_evaluated_weights(records: list[dict]) -> None:
    """Every pruned record was scored on the weights its checkpoint's prune report records: a record
    left from an earlier checkpoint (or a report from a later one) is an error, never a table row."""
    for record in records:
        if record["method"] == "dense":
            continue
        report = prune_report_path(record["path"])
        recorded = json.loads(report.read_text())["weights_sha256"]
        if record.get("weights_sha256") != recorded:
            raise ValueError(
                f"{record['path']} scored weights other than {report} records; rerun its evaluation "
                f"(snakemake --forcerun {record['path']})"
            )


# --------------------------------------------------------------------------------------------------
# Point estimates
# --------------------------------------------------------------------------------------------------

def _task_ratio(score: float, dense: float, chance: float | None, higher_is_better: bool
                ) -> tuple[float, float, str | None, str | None]:
    """(retention, chance_adjusted, why retention is NaN, why chance_adjusted is NaN)."""
    if higher_is_better:
        ret, why = (math.nan, f"dense score is {dense}") if dense == 0 else (score / dense, None)
    else:
        ret, why = (math.nan, f"pruned score is {score}") if score == 0 else (dense / score, None)
    if chance is None:
        return ret, ret, why, why
    if dense <= chance:
        return ret, math.nan, why, f"dense score {dense} <= chance {chance}"
    return ret, (score - chance) / (dense - chance), why, None


def _mean(values: Sequence[float]) -> float:
    """Plain mean that propagates NaN (a NaN part makes the whole undefined, not silently smaller)."""
    return float(np.mean(values)) if len(values) else math.nan


def pair_with_dense(records: list[dict]) -> tuple[dict[tuple, dict], dict[tuple, list[dict]]]:
    """Dense records by (model, dimension) and pruned records grouped by KEYS, checked for
    duplicates and a missing dense record."""
    dense: dict[tuple, dict] = {}
    for rec in records:
        if rec["method"] == DENSE:
            key = (rec["model"], rec["dimension"])
            if key in dense:
                raise ValueError(f"two dense eval records for model {key[0]!r}, dimension {key[1]!r}")
            dense[key] = rec
    groups: dict[tuple, list[dict]] = {}
    seen: set[tuple] = set()
    for rec in records:
        if rec["method"] == DENSE:
            continue
        key = record_key(rec)
        if key + (rec["dimension"],) in seen:
            raise ValueError(f"duplicate eval record for {dict(zip(KEYS, key))}, "
                             f"dimension {rec['dimension']!r}")
        seen.add(key + (rec["dimension"],))
        if (rec["model"], rec["dimension"]) not in dense:
            raise ValueError(
                f"no dense eval record for model {rec['model']!r}, dimension {rec['dimension']!r} "
                f"(needed by method {rec['method']!r}, target {rec[TARGET_KEY]}, "
                f"calib {rec['calib']!r}, seed {rec['seed']})")
        groups.setdefault(key, []).append(rec)
    return dense, groups


def checked_task(rec: dict, dense_rec: dict, task: str) -> tuple[dict, dict]:
    """The pruned and dense entries of one task, after checking they were scored alike."""
    dense_tasks = dense_rec["tasks"]
    if task not in dense_tasks:
        raise ValueError(f"dense eval record for model {rec['model']!r}, dimension "
                         f"{rec['dimension']!r} lacks task {task!r}")
    entry, d_entry = rec["tasks"][task], dense_tasks[task]
    for key in ("metric", "num_fewshot"):
        if entry[key] != d_entry[key]:
            raise ValueError(f"model {rec['model']!r}, task {task!r}: pruned {key} {entry[key]!r}"
                             f" differs from dense {key} {d_entry[key]!r}")
    chance, p_chance = d_entry["chance"], entry["chance"]
    if (chance is None) != (p_chance is None) or (
            chance is not None and not math.isclose(float(p_chance), float(chance), abs_tol=1e-12)):
        raise ValueError(f"model {rec['model']!r}, task {task!r}: pruned chance {p_chance} "
                         f"differs from dense chance {chance}")
    return entry, d_entry


def retention_table(records: list[dict]) -> pd.DataFrame:
    """Retention of every pruned model relative to its dense model, at three levels
    (docs/definitions.md#retention).

    One row per (model, method, target, calib, seed, level, name), level in
    ("task", "dimension", "total"); ``name`` is the task, the dimension or "total". ``score``,
    ``dense_score``, ``chance``, ``metric`` and ``num_fewshot`` (shots) are filled at task level only; ``dimension`` is the
    task's dimension (the name itself for dimension rows, "total" for total rows). A zero
    denominator (or dense <= chance) gives NaN with a warning logged once per model, task and view.
    Raises ValueError for a pruned record without a dense record, a task missing from the dense
    record, a metric, shots or chance that differs between pruned and dense, or duplicate records.
    """
    dense, groups = pair_with_dense(records)
    warned: set[tuple] = set()
    rows: list[dict] = []
    dims_by_model: dict[str, set[frozenset]] = {}
    for key, recs in groups.items():
        base = dict(zip(KEYS, key))
        task_rows, dim_rows = [], []
        for rec in recs:
            dim = rec["dimension"]
            rets, adjs = [], []
            for task in rec["tasks"]:
                entry, d_entry = checked_task(rec, dense[(rec["model"], dim)], task)
                score, d_score = float(entry["score"]), float(d_entry["score"])
                chance = None if d_entry["chance"] is None else float(d_entry["chance"])
                ret, adj, why_ret, why_adj = _task_ratio(score, d_score, chance, d_entry["higher_is_better"])
                for view, why in (("retention", why_ret), ("chance_adjusted", why_adj)):
                    if why and (rec["model"], task, view) not in warned:
                        warned.add((rec["model"], task, view))
                        log.warning("model %r, task %r: %s; %s is NaN", rec["model"], task, why, view)
                rets.append(ret)
                adjs.append(adj)
                task_rows.append({**base, "level": "task", "name": task, "dimension": dim,
                                  "metric": entry["metric"], "num_fewshot": entry["num_fewshot"], "score": score,
                                  "dense_score": d_score, "chance": math.nan if chance is None else chance,
                                  "retention": ret, "chance_adjusted": adj})
            dim_rows.append({**base, "level": "dimension", "name": dim, "dimension": dim,
                             "retention": _mean(rets), "chance_adjusted": _mean(adjs)})
        total = {**base, "level": TOTAL, "name": TOTAL, "dimension": TOTAL,
                 "retention": _mean([r["retention"] for r in dim_rows]),
                 "chance_adjusted": _mean([r["chance_adjusted"] for r in dim_rows])}
        rows.extend(task_rows + dim_rows + [total])
        dims_by_model.setdefault(base["model"], set()).add(frozenset(r["name"] for r in dim_rows))

    for model, dim_sets in dims_by_model.items():
        if len(dim_sets) > 1:
            log.warning("model %r: pruned models were evaluated on different sets of dimensions %s; "
                        "their total retentions are not comparable",
                        model, sorted(sorted(s) for s in dim_sets))

    table = pd.DataFrame(rows, columns=RETENTION_COLUMNS)
    for col in ("score", "dense_score", "chance", "retention", "chance_adjusted"):
        table[col] = table[col].astype(float)
    table["num_fewshot"] = table["num_fewshot"].astype("Int64")  # task rows only: the shots both were scored with
    # Stable sort keeps tasks, dimensions, total in order inside each group.
    return table.sort_values(KEYS, kind="stable", na_position="last").reset_index(drop=True)
