"""Bootstrap intervals of retention, per checkpoint and over calibration seeds.

Why: a retention figure from one calibration draw and a few hundred evaluation items moves with
both; the report shows every figure with an interval that carries the noise it is subject to, and
keeps differences between calibration sets paired so shared evaluation noise cancels. The methods
are defined in docs/definitions.md#intervals: the item bootstrap per checkpoint
(docs/definitions.md#item-bootstrap-per-checkpoint), the two-stage bootstrap over seeds and items
(docs/definitions.md#seed-bootstrap-two-stage-over-seeds-and-items) and keyed draws
(docs/definitions.md#keyed-draws). Point estimates come from calmix.analysis.retention; what is
computed across calibration sets from the over-seeds draws (the mean over sets, the differences
between sets) is calmix.analysis.comparisons.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from calmix.analysis.comparisons import COMPARISON_COLUMNS, Comparisons, compare, summarise_sets
from calmix.analysis.retention import (KEYS, SET, TOTAL, VALUES, checked_task, items_path, pair_with_dense,
                                       retention_table)
from calmix.core.stats import keyed_rng, percentile_interval, resample_counts

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = [
    *SET, "level", "name", "dimension", "seeds",
    "retention", "retention_sd", "retention_low", "retention_high",
    "chance_adjusted", "chance_adjusted_sd", "chance_adjusted_low", "chance_adjusted_high",
]

#: Two-stage draws of the over-seeds table: draws[value][(*SET, level, name)], one value per resample.
SeedDraws = dict[str, dict[tuple, np.ndarray]]

#: How far lm-eval's reported score may sit from the mean of its logged items before we warn.
_ITEM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Bootstrap:
    """Settings of every bootstrap in the report (config: report.bootstrap)."""

    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0


@dataclass
class _Draws:
    """Bootstrap draws of retention and chance-adjusted retention for every checkpoint:
    draws[value][(KEYS tuple, level, name)] is an array of one value per resample."""

    resamples: int
    draws: dict[str, dict[tuple, np.ndarray]] = field(default_factory=lambda: {v: {} for v in VALUES})

    def add(self, key: tuple, level: str, name: str, retention: np.ndarray, adjusted: np.ndarray) -> None:
        self.draws["retention"][(key, level, name)] = retention
        self.draws["chance_adjusted"][(key, level, name)] = adjusted


# --------------------------------------------------------------------------------------------------
# Item bootstrap, per checkpoint
# --------------------------------------------------------------------------------------------------

def task_items(rec: dict, task: str) -> pd.DataFrame:
    """One task's items of a record, in (leaf, doc_id) order: the order every paired draw uses."""
    items = rec.get("items")
    if items is None:
        raise ValueError(f"{rec['path']}: no per-item scores loaded (load_eval_records(..., items=True))")
    rows = items[items["task"] == task]
    if rows.empty:
        raise ValueError(f"{items_path(rec['path'])}: no items for task {task!r}")
    return rows.sort_values(["leaf", "doc_id"], kind="stable")


def matched_items(rec: dict, dense_rec: dict, task: str, dense_items: pd.DataFrame) -> pd.DataFrame:
    """A pruned record's items of a task, checked to be the dense model's items in the same order, so
    that one draw of item counts resamples both alike."""
    items = task_items(rec, task)
    ids = dense_items[["leaf", "doc_id"]].to_numpy()
    if len(items) != len(dense_items) or not (items[["leaf", "doc_id"]].to_numpy() == ids).all():
        raise ValueError(f"{items_path(rec['path'])}: items of task {task!r} differ from the dense "
                         f"model's ({items_path(dense_rec['path'])}); both must be evaluated with "
                         "the same settings")
    return items


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
        d_items = task_items(dense_rec, task)
        columns = [d_items["score"].to_numpy(float)]
        for j in having:
            rec = recs[j][1]
            checked_task(rec, dense_rec, task)
            columns.append(matched_items(rec, dense_rec, task, d_items)["score"].to_numpy(float))
        scores = np.stack(columns, axis=1)
        weights = d_items["weight"].to_numpy(float)
        aggregation = d_entry["aggregation"]
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
            ret = p_stat / d_stat if d_entry["higher_is_better"] else d_stat / p_stat
            chance = d_entry["chance"]
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
    dense, groups = pair_with_dense(records)
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


# --------------------------------------------------------------------------------------------------
# Two-stage bootstrap, over seeds and items
# --------------------------------------------------------------------------------------------------

def seed_picks(boot: Bootstrap, set_key: tuple, seeds: tuple) -> np.ndarray:
    """(resamples, k) indices into a set's k seeds: the seed draw of the two-stage bootstrap, keyed by the
    set and its seeds, so every table drawing over the same seeds draws them alike."""
    return keyed_rng(boot.seed, "seeds", *set_key, *seeds).integers(0, len(seeds), (boot.resamples, len(seeds)))


def mix_seeds(per_seed: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Two-stage resamples: per resample, the mean of the drawn seeds' item resamples at that index
    (``per_seed``: (k, resamples); ``picks``: :func:`seed_picks`)."""
    return per_seed[picks, np.arange(picks.shape[0])[:, None]].mean(axis=1)


def _summarise_seeds(table: pd.DataFrame, draws: _Draws, boot: Bootstrap) -> tuple[pd.DataFrame, SeedDraws]:
    """The over-seeds table, and each of its rows' two-stage draws keyed by (SET..., level, name)."""
    rows = []
    mixed_draws: SeedDraws = {value: {} for value in VALUES}
    for set_key, g in table.groupby(SET, sort=False, dropna=False):
        picks: dict[tuple, np.ndarray] = {}  # one seed draw per set of seeds, shared by the set's rows
        for (level, name), h in g.groupby(["level", "name"], sort=False, dropna=False):
            seeds = tuple(h["seed"])
            if seeds not in picks:
                picks[seeds] = seed_picks(boot, set_key, seeds)
            row = dict(zip(SET, set_key), level=level, name=name, dimension=h["dimension"].iat[0],
                       seeds=len(seeds))
            for value in VALUES:
                per_seed = np.stack([draws.draws[value][((*set_key, s), level, name)] for s in seeds])
                mixed = mix_seeds(per_seed, picks[seeds])
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


class RetentionTables(NamedTuple):
    """Everything the retention rule writes (results/tables/retention*.csv)."""

    per_checkpoint: pd.DataFrame
    over_seeds: pd.DataFrame
    over_sets: pd.DataFrame
    comparisons: pd.DataFrame
    source_pairs: pd.DataFrame


def retention_with_intervals(records: list[dict], boot: Bootstrap = Bootstrap(),
                             comparisons: Comparisons | None = None,
                             pairs: Comparisons | None = None) -> RetentionTables:
    """Retention per checkpoint, over seeds, over calibration sets and as differences between sets,
    all with percentile bootstrap intervals.

    The per-checkpoint table is :func:`calmix.analysis.retention.retention_table` plus
    ``retention_low/high`` and ``chance_adjusted_low/high`` from the item bootstrap. The over-seeds
    table (SUMMARY_COLUMNS) has one row per (model, method, target, calib, level, name): the mean
    over seeds, its standard deviation over seeds (NaN with one seed), the number of seeds and the
    two-stage interval. The over-sets, comparisons and source-pairs tables come from
    :func:`calmix.analysis.comparisons.summarise_sets` and :func:`calmix.analysis.comparisons.compare`
    (the pairs ``comparisons`` names per setting, e.g. :func:`calmix.analysis.comparisons.builder_comparisons`,
    and those ``pairs`` names, e.g. :func:`calmix.analysis.comparisons.source_pairs`).
    Records need their items (``load_eval_records(..., items=True)``).
    """
    table = retention_table(records)
    draws = _item_draws(records, boot)
    keys = [(tuple(row[k] for k in KEYS), row["level"], row["name"]) for _, row in table.iterrows()]
    for value in VALUES:
        stacked = np.stack([draws.draws[value][k] for k in keys]) if keys else np.empty((0, boot.resamples))
        table[f"{value}_low"], table[f"{value}_high"] = percentile_interval(stacked, boot.confidence)
    summary, mixed = _summarise_seeds(table, draws, boot)
    compared, paired = (compare(summary, mixed, chosen, boot.confidence) if chosen
                        else pd.DataFrame(columns=COMPARISON_COLUMNS) for chosen in (comparisons, pairs))
    return RetentionTables(table, summary, summarise_sets(summary, mixed, boot.confidence), compared, paired)
