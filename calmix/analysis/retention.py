"""Retention of pruned models relative to their dense model, with bootstrap intervals.

Definitions, exactly as computed here (the same text goes into the report):

- Task retention = pruned score / dense score, the dense score taken from the same model and task;
  for a metric where lower is better (perplexity) it is dense / pruned, so 1 still means "kept".
- Dimension retention = mean of its tasks' retentions. Total retention = mean of the dimensions'.
- Chance-adjusted retention = (pruned - chance) / (dense - chance) at task level, then the same
  means; a task without a chance level (perplexity) enters with its plain retention.
- A dense score of 0 (or dense <= chance for the chance-adjusted view) gives NaN, with a logged
  warning, not inf; a NaN task makes its dimension and the total NaN (means do not skip NaN).

Intervals come from the per-item scores every evaluation keeps (``.items.parquet``):

- Per checkpoint: a percentile bootstrap over evaluation items. Each resample draws every task's
  items once and applies that draw to the dense model and to every pruned model of the same base
  model, so retention is a paired ratio and differences between calibration sets stay paired.
- Over seeds: a two-stage bootstrap. Each resample draws the seeds of a calibration set with
  replacement and, inside each, uses the same item resample, so the interval carries both the
  calibration seed's noise and the evaluation items' noise. With one seed it equals the item interval.
- Over calibration sets (a method at a glance): the mean of the sets' over-seeds draws, resample by
  resample, so the shared items are drawn once for all sets.
- Differences between two calibration sets (a mix against the best single source, say): the
  difference of their over-seeds draws, resample by resample: paired by item, independent by seed.

Draws are keyed by (seed, task) and (seed, calibration set), so adding a source to a study does not
move any other source's interval.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from calmix.core.stats import keyed_rng, percentile_interval, resample_counts

log = logging.getLogger(__name__)

DENSE = "dense"
TOTAL = "total"
KEYS = ["model", "method", "sparsity", "calib", "seed"]
GROUP = ["model", "method", "sparsity"]
SET = [*GROUP, "calib"]
VALUES = ("retention", "chance_adjusted")
RETENTION_COLUMNS = [
    *KEYS, "level", "name", "dimension", "metric",
    "score", "dense_score", "chance", "retention", "chance_adjusted",
]
INTERVAL_COLUMNS = ["retention_low", "retention_high", "chance_adjusted_low", "chance_adjusted_high"]
SETTING_COLUMNS = [
    *GROUP, "level", "name", "dimension", "sets",
    "retention", "retention_low", "retention_high",
    "chance_adjusted", "chance_adjusted_low", "chance_adjusted_high",
]
COMPARISON_COLUMNS = [
    *GROUP, "comparison", "calib", "versus", "level", "name", "dimension",
    "difference", "difference_low", "difference_high",
    "chance_adjusted_difference", "chance_adjusted_difference_low", "chance_adjusted_difference_high",
]
SUMMARY_COLUMNS = [
    *SET, "level", "name", "dimension", "seeds",
    "retention", "retention_sd", "retention_low", "retention_high",
    "chance_adjusted", "chance_adjusted_sd", "chance_adjusted_low", "chance_adjusted_high",
]

_REQUIRED_RECORD_KEYS = ("model", "method", "sparsity", "calib", "seed", "dimension", "tasks")
#: How far lm-eval's reported score may sit from the mean of its logged items before we warn.
_ITEM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Bootstrap:
    """Settings of every bootstrap in the report (config: report.bootstrap)."""

    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0


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
    from calmix.evaluation.harness import read_items

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
        if not isinstance(record["tasks"], dict) or not record["tasks"]:
            raise ValueError(f"{path}: eval record has no tasks")
        record["path"] = str(path)
        if items:
            per_item = items_path(path)
            if not per_item.is_file():
                raise FileNotFoundError(f"{per_item}: per-item scores of {path} are missing; rerun its "
                                        "evaluation (snakemake --forcerun on that file)")
            record["items"] = read_items(per_item)
        records.append(record)
    return records


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


def _pair_with_dense(records: list[dict]) -> tuple[dict[tuple, dict], dict[tuple, list[dict]]]:
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
        key = tuple(rec[k] for k in KEYS)
        if key + (rec["dimension"],) in seen:
            raise ValueError(f"duplicate eval record for {dict(zip(KEYS, key))}, "
                             f"dimension {rec['dimension']!r}")
        seen.add(key + (rec["dimension"],))
        if (rec["model"], rec["dimension"]) not in dense:
            raise ValueError(
                f"no dense eval record for model {rec['model']!r}, dimension {rec['dimension']!r} "
                f"(needed by method {rec['method']!r}, sparsity {rec['sparsity']}, "
                f"calib {rec['calib']!r}, seed {rec['seed']})")
        groups.setdefault(key, []).append(rec)
    return dense, groups


def _checked_task(rec: dict, dense_rec: dict, task: str) -> tuple[dict, dict]:
    """The pruned and dense entries of one task, after checking they were scored alike."""
    dense_tasks = dense_rec["tasks"]
    if task not in dense_tasks:
        raise ValueError(f"dense eval record for model {rec['model']!r}, dimension "
                         f"{rec['dimension']!r} lacks task {task!r}")
    entry, d_entry = rec["tasks"][task], dense_tasks[task]
    if entry.get("metric") != d_entry.get("metric"):
        raise ValueError(f"model {rec['model']!r}, task {task!r}: pruned metric {entry.get('metric')!r}"
                         f" differs from dense metric {d_entry.get('metric')!r}")
    chance, p_chance = d_entry.get("chance"), entry.get("chance")
    if (chance is None) != (p_chance is None) or (
            chance is not None and not math.isclose(float(p_chance), float(chance), abs_tol=1e-12)):
        raise ValueError(f"model {rec['model']!r}, task {task!r}: pruned chance {p_chance} "
                         f"differs from dense chance {chance}")
    return entry, d_entry


def retention_table(records: list[dict]) -> pd.DataFrame:
    """Retention of every pruned model relative to its dense model, at three levels.

    One row per (model, method, sparsity, calib, seed, level, name), level in
    ("task", "dimension", "total"); ``name`` is the task, the dimension or "total". ``score``,
    ``dense_score``, ``chance`` and ``metric`` are filled at task level only; ``dimension`` is the
    task's dimension (the name itself for dimension rows, "total" for total rows). Raises
    ValueError for a pruned record without a dense record, a task missing from the dense record, a
    metric or chance that differs between pruned and dense, or duplicate records.
    """
    dense, groups = _pair_with_dense(records)
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
                entry, d_entry = _checked_task(rec, dense[(rec["model"], dim)], task)
                score, d_score = float(entry["score"]), float(d_entry["score"])
                chance = None if d_entry.get("chance") is None else float(d_entry["chance"])
                ret, adj, why_ret, why_adj = _task_ratio(score, d_score, chance,
                                                         d_entry.get("higher_is_better", True))
                for view, why in (("retention", why_ret), ("chance_adjusted", why_adj)):
                    if why and (rec["model"], task, view) not in warned:
                        warned.add((rec["model"], task, view))
                        log.warning("model %r, task %r: %s; %s is NaN", rec["model"], task, why, view)
                rets.append(ret)
                adjs.append(adj)
                task_rows.append({**base, "level": "task", "name": task, "dimension": dim,
                                  "metric": entry.get("metric"), "score": score,
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
    # Stable sort keeps tasks, dimensions, total in order inside each group.
    return table.sort_values(KEYS, kind="stable", na_position="last").reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------------

@dataclass
class _Draws:
    """Bootstrap draws of retention and chance-adjusted retention for every checkpoint:
    draws[value][(KEYS tuple, level, name)] is an array of one value per resample."""

    resamples: int
    draws: dict[str, dict[tuple, np.ndarray]] = field(default_factory=lambda: {v: {} for v in VALUES})

    def add(self, key: tuple, level: str, name: str, retention: np.ndarray, adjusted: np.ndarray) -> None:
        self.draws["retention"][(key, level, name)] = retention
        self.draws["chance_adjusted"][(key, level, name)] = adjusted


def _task_items(rec: dict, task: str) -> pd.DataFrame:
    items = rec.get("items")
    if items is None:
        raise ValueError(f"{rec.get('path', 'eval record')}: no per-item scores loaded "
                         "(load_eval_records(..., items=True))")
    rows = items[items["task"] == task]
    if rows.empty:
        raise ValueError(f"{items_path(rec['path'])}: no items for task {task!r}")
    return rows.sort_values(["leaf", "doc_id"], kind="stable")


def _resampled_statistic(scores: np.ndarray, weights: np.ndarray, counts: np.ndarray,
                         aggregation: str) -> np.ndarray:
    """(resamples, models) task statistic: the item mean, or exp(-sum ll / sum words) for perplexity."""
    totals = counts @ scores
    if aggregation == "perplexity":
        return np.exp(-totals / (counts @ weights)[:, None])
    return totals / counts.sum(axis=1, keepdims=True)


def _point_statistic(scores: np.ndarray, weights: np.ndarray, aggregation: str) -> np.ndarray:
    if aggregation == "perplexity":
        return np.exp(-scores.sum(axis=0) / weights.sum())
    return scores.mean(axis=0)


def _bootstrap_dimension(model: str, dim: str, dense_rec: dict, recs: list[tuple[tuple, dict]],
                         boot: Bootstrap, out: _Draws) -> None:
    """Item-bootstrap draws for every pruned record of one (model, dimension), one shared draw per task."""
    task_draws: list[dict[str, tuple[np.ndarray, np.ndarray]]] = [{} for _ in recs]
    for task, d_entry in dense_rec["tasks"].items():
        having = [j for j, (_, rec) in enumerate(recs) if task in rec["tasks"]]
        if not having:
            continue
        d_items = _task_items(dense_rec, task)
        ids = d_items[["leaf", "doc_id"]].to_numpy()
        columns = [d_items["score"].to_numpy(float)]
        for j in having:
            rec = recs[j][1]
            _checked_task(rec, dense_rec, task)
            p_items = _task_items(rec, task)
            if len(p_items) != len(d_items) or not (p_items[["leaf", "doc_id"]].to_numpy() == ids).all():
                raise ValueError(f"{items_path(rec['path'])}: items of task {task!r} differ from the dense "
                                 f"model's ({items_path(dense_rec['path'])}); both must be evaluated with "
                                 "the same settings")
            columns.append(p_items["score"].to_numpy(float))
        scores = np.stack(columns, axis=1)
        weights = d_items["weight"].to_numpy(float) if "weight" in d_items else np.ones(len(d_items))
        aggregation = d_entry.get("aggregation", "mean")
        point = _point_statistic(scores, weights, aggregation)
        for rec, value in zip([dense_rec, *(recs[j][1] for j in having)], point):
            reported = rec["tasks"][task]["score"]
            if reported is not None and not math.isclose(value, reported, rel_tol=_ITEM_TOLERANCE,
                                                          abs_tol=_ITEM_TOLERANCE):
                log.warning("%s: task %r scores %.6g by its items but %.6g by lm-eval; the interval "
                            "is centred on the items", items_path(rec["path"]), task, value, reported)
        counts = resample_counts(len(d_items), boot.resamples, keyed_rng(boot.seed, model, dim, task))
        stat = _resampled_statistic(scores, weights, counts, aggregation)
        d_stat, p_stat = stat[:, :1], stat[:, 1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            ret = p_stat / d_stat if d_entry.get("higher_is_better", True) else d_stat / p_stat
            chance = d_entry.get("chance")
            adj = ret if chance is None else (p_stat - chance) / (d_stat - chance)
        ret[~np.isfinite(ret)] = np.nan
        adj[~np.isfinite(adj)] = np.nan
        for column, j in enumerate(having):
            task_draws[j][task] = (ret[:, column], adj[:, column])
    for (key, _), draws in zip(recs, task_draws):
        for task, (ret, adj) in draws.items():
            out.add(key, "task", task, ret, adj)
        out.add(key, "dimension", dim, np.mean([r for r, _ in draws.values()], axis=0),
                np.mean([a for _, a in draws.values()], axis=0))


def _item_draws(records: list[dict], boot: Bootstrap) -> _Draws:
    dense, groups = _pair_with_dense(records)
    by_dimension: dict[tuple, list[tuple[tuple, dict]]] = {}
    for key, recs in groups.items():
        for rec in recs:
            by_dimension.setdefault((rec["model"], rec["dimension"]), []).append((key, rec))
    out = _Draws(boot.resamples)
    for (model, dim), recs in by_dimension.items():
        _bootstrap_dimension(model, dim, dense[(model, dim)], recs, boot, out)
    for key, recs in groups.items():
        dims = [rec["dimension"] for rec in recs]
        for value in VALUES:
            parts = [out.draws[value][(key, "dimension", d)] for d in dims]
            out.draws[value][(key, TOTAL, TOTAL)] = np.mean(parts, axis=0)
    return out


class RetentionTables(NamedTuple):
    """Everything the retention rule writes (results/tables/retention*.csv)."""

    per_checkpoint: pd.DataFrame
    over_seeds: pd.DataFrame
    over_sets: pd.DataFrame
    comparisons: pd.DataFrame


#: Given one setting's over-seeds rows, the (calib, versus, label) pairs to compare.
Comparisons = Callable[[pd.DataFrame], list[tuple[str, str, str]]]


def retention_with_intervals(records: list[dict], boot: Bootstrap = Bootstrap(),
                             comparisons: Comparisons | None = None) -> RetentionTables:
    """Retention per checkpoint, over seeds, over calibration sets and as differences between sets,
    all with percentile bootstrap intervals.

    The per-checkpoint table is :func:`retention_table` plus ``retention_low/high`` and
    ``chance_adjusted_low/high`` from the item bootstrap. The over-seeds table has one row per
    (model, method, sparsity, calib, level, name): the mean over seeds, its standard deviation over
    seeds (NaN with one seed), the number of seeds and the two-stage (seeds, then items) interval.
    The over-sets table has one row per (model, method, sparsity, level, name): the mean over
    calibration sets of their over-seeds means, with its interval. The comparisons table has the
    differences (calib minus versus) for the pairs ``comparisons`` names per setting (see
    :func:`builder_comparisons`). Records need their items (``load_eval_records(..., items=True)``).
    """
    table = retention_table(records)
    draws = _item_draws(records, boot)
    keys = [(tuple(row[k] for k in KEYS), row["level"], row["name"]) for _, row in table.iterrows()]
    for value in VALUES:
        stacked = np.stack([draws.draws[value][k] for k in keys]) if keys else np.empty((0, boot.resamples))
        table[f"{value}_low"], table[f"{value}_high"] = percentile_interval(stacked, boot.confidence)
    summary, mixed = _summarise_seeds(table, draws, boot)
    compared = _compare(summary, mixed, comparisons, boot) if comparisons else pd.DataFrame(columns=COMPARISON_COLUMNS)
    return RetentionTables(table, summary, _summarise_sets(summary, mixed, boot), compared)


#: How a comparison against the best single source is labelled: "<built set> vs best single source".
BEST_SINGLE = "best single source"


def builder_comparisons(sources: Sequence[str], builders: dict[str, str], baseline: str | None) -> Comparisons:
    """The comparisons of built calibration sets the report makes in every setting: each built set
    against the best single source (by mean total retention over seeds) and against ``baseline`` (the
    study's default source, C4-like); each IGSP set against each Self-Cal and SGS set."""

    def pairs(group: pd.DataFrame) -> list[tuple[str, str, str]]:
        present = set(group["calib"])
        totals = group[(group["level"] == TOTAL) & group["calib"].isin(sources)].set_index("calib")["retention"]
        totals = totals.dropna()
        best = totals.idxmax() if len(totals) else None
        out = []
        for name in (b for b in builders if b in present):
            if best is not None:
                out.append((name, best, f"{name} vs {BEST_SINGLE}"))
            if baseline in present and baseline != best:
                out.append((name, baseline, f"{name} vs {baseline}"))
        for name, kind in builders.items():
            if kind == "igsp" and name in present:
                out += [(name, other, f"{name} vs {other}") for other, k in builders.items()
                        if k in ("selfcal", "sgs") and other in present]
        return out

    return pairs


def _compare(summary: pd.DataFrame, mixed: dict[str, dict[tuple, np.ndarray]], comparisons: Comparisons,
             boot: Bootstrap) -> pd.DataFrame:
    rows = []
    for key, group in summary.groupby(GROUP, sort=False, dropna=False):
        for calib, versus, label in comparisons(group):
            a = group[group["calib"] == calib].set_index(["level", "name"])
            b = group[group["calib"] == versus].set_index(["level", "name"])
            for (level, name), row in a.iterrows():
                if (level, name) not in b.index:
                    continue
                out = dict(zip(GROUP, key), comparison=label, calib=calib, versus=versus, level=level, name=name,
                           dimension=row["dimension"])
                for value, column in (("retention", "difference"), ("chance_adjusted", "chance_adjusted_difference")):
                    diff = mixed[value][(*key, calib, level, name)] - mixed[value][(*key, versus, level, name)]
                    low, high = percentile_interval(diff[None, :], boot.confidence)
                    out.update({column: row[value] - b.at[(level, name), value],
                                f"{column}_low": low[0], f"{column}_high": high[0]})
                rows.append(out)
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _summarise_seeds(table: pd.DataFrame, draws: _Draws, boot: Bootstrap
                     ) -> tuple[pd.DataFrame, dict[str, dict[tuple, np.ndarray]]]:
    """The over-seeds table, and each of its rows' two-stage draws keyed by (SET..., level, name)."""
    rows = []
    mixed_draws: dict[str, dict[tuple, np.ndarray]] = {value: {} for value in VALUES}
    for set_key, g in table.groupby(SET, sort=False, dropna=False):
        picks: dict[tuple, np.ndarray] = {}  # one seed draw per set of seeds, shared by the set's rows
        for (level, name), h in g.groupby(["level", "name"], sort=False, dropna=False):
            seeds = tuple(h["seed"])
            if seeds not in picks:
                rng = keyed_rng(boot.seed, "seeds", *set_key, *seeds)
                picks[seeds] = rng.integers(0, len(seeds), (boot.resamples, len(seeds)))
            row = dict(zip(SET, set_key), level=level, name=name, dimension=h["dimension"].iat[0],
                       seeds=len(seeds))
            for value in VALUES:
                per_seed = np.stack([draws.draws[value][((*set_key, s), level, name)] for s in seeds])
                mixed = per_seed[picks[seeds], np.arange(boot.resamples)[:, None]].mean(axis=1)
                mixed_draws[value][(*set_key, level, name)] = mixed
                low, high = percentile_interval(mixed[None, :], boot.confidence)
                row.update({value: h[value].mean(skipna=False),
                            f"{value}_sd": h[value].std(ddof=1) if len(h) > 1 else math.nan,
                            f"{value}_low": low[0], f"{value}_high": high[0]})
            rows.append(row)
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    for col in SUMMARY_COLUMNS[SUMMARY_COLUMNS.index("retention"):]:
        summary[col] = summary[col].astype(float)
    summary["seeds"] = summary["seeds"].astype(int)
    return summary, mixed_draws


def _summarise_sets(summary: pd.DataFrame, mixed: dict[str, dict[tuple, np.ndarray]], boot: Bootstrap
                    ) -> pd.DataFrame:
    rows = []
    for key, g in summary.groupby([*GROUP, "level", "name"], sort=False, dropna=False):
        row = dict(zip([*GROUP, "level", "name"], key), dimension=g["dimension"].iat[0], sets=len(g))
        for value in VALUES:
            stacked = np.stack([mixed[value][(*key[:3], calib, *key[3:])] for calib in g["calib"]])
            low, high = percentile_interval(stacked.mean(axis=0)[None, :], boot.confidence)
            row.update({value: g[value].mean(skipna=False), f"{value}_low": low[0], f"{value}_high": high[0]})
        rows.append(row)
    out = pd.DataFrame(rows, columns=SETTING_COLUMNS)
    out["sets"] = out["sets"].astype(int)
    return out
