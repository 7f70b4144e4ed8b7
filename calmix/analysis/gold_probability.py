"""Gold-probability retention: a continuous score per multiple-choice task, shown beside accuracy retention.

Why: accuracy moves only where a pruned model's argmax flips, so on a few hundred items the
intervals of accuracy retention are wide and the calibration sources' ranking rests on few flips.
The gold choice's probability among the choices (calmix.evaluation.scoring.gold_probability, kept per
item as ``gold_prob``) moves with every pruned weight. Its retention is reported beside accuracy
retention, never instead of it, with the evidence whether both rank the single sources alike
(:func:`rank_agreement`). Definitions: docs/definitions.md#gold-probability-retention and
docs/definitions.md#rank-agreement-of-accuracy-and-gold-probability. The draws are those of
calmix.analysis.intervals (the same keyed item counts per task, the same keyed seed draw per set), so
each resample of gold-probability retention is paired with the same resample of accuracy retention.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from calmix.analysis.intervals import (Bootstrap, RetentionTables, matched_items, mix_seeds, seed_picks,
                                       task_items)
from calmix.analysis.retention import GROUP, KEYS, SET, items_path, pair_with_dense
from calmix.core.stats import keyed_rng, percentile_interval, resample_counts, spearman

log = logging.getLogger(__name__)

GOLD_PROB_COLUMNS = [
    *KEYS, "seeds", "dimension", "task", "items", "gold_prob", "dense_gold_prob",
    "gold_prob_retention", "gold_prob_retention_low", "gold_prob_retention_high",
    "accuracy_retention", "accuracy_retention_low", "accuracy_retention_high",
]
AGREEMENT_COLUMNS = [
    *GROUP, "dimension", "task", "rho", "p", "p_method", "n", "best_accuracy", "best_gold_prob",
    "accuracy_half_width", "gold_prob_half_width",
]
_ACCURACY = {"retention": "accuracy_retention", "retention_low": "accuracy_retention_low",
             "retention_high": "accuracy_retention_high"}


def _gold(items: pd.DataFrame) -> np.ndarray:
    """An item frame's gold_prob; NaN throughout for a frame built without the column (read_items adds it)."""
    return items["gold_prob"].to_numpy(float) if "gold_prob" in items else np.full(len(items), np.nan)


def _checkpoint_rows(records: list[dict], boot: Bootstrap) -> tuple[list[dict], dict[tuple, np.ndarray]]:
    """Per pruned checkpoint and task with gold probabilities on both sides: the row and its item-bootstrap
    draws of gold-probability retention, keyed by (KEYS tuple, task)."""
    dense, groups = pair_with_dense(records)
    by_dimension: dict[tuple, list[tuple[tuple, dict]]] = {}
    for key, recs in groups.items():
        for rec in recs:
            by_dimension.setdefault((rec["model"], rec["dimension"]), []).append((key, rec))
    rows: list[dict] = []
    draws: dict[tuple, np.ndarray] = {}
    warned: set[tuple] = set()
    for (model, dim), recs in by_dimension.items():
        dense_rec = dense[model, dim]
        for task in dense_rec["tasks"]:
            having = [(key, rec) for key, rec in recs if task in rec["tasks"]]
            if not having:
                continue
            d_items = task_items(dense_rec, task)
            d_gold = _gold(d_items)
            counts = None  # drawn once per task, as the accuracy interval draws it, and only where needed
            for key, rec in having:
                p_gold = _gold(matched_items(rec, dense_rec, task, d_items))
                both = np.isfinite(d_gold) & np.isfinite(p_gold)
                if not both.any():
                    _warn_lacking(rec, dense_rec, task, np.isfinite(d_gold).any(), np.isfinite(p_gold).any(),
                                  warned)
                    continue
                if counts is None:
                    counts = resample_counts(len(d_items), boot.resamples, keyed_rng(boot.seed, model, dim, task))
                with np.errstate(divide="ignore", invalid="ignore"):  # the count-weighted means' ratio
                    draw = (counts @ np.where(both, p_gold, 0.0)) / (counts @ np.where(both, d_gold, 0.0))
                draw[~np.isfinite(draw)] = np.nan
                point_p, point_d = p_gold[both].mean(), d_gold[both].mean()
                rows.append({**dict(zip(KEYS, key)), "seeds": 1, "dimension": dim, "task": task,
                             "items": int(both.sum()), "gold_prob": point_p, "dense_gold_prob": point_d,
                             "gold_prob_retention": point_p / point_d if point_d > 0 else np.nan})
                draws[key, task] = draw
    return rows, draws


def _warn_lacking(rec: dict, dense_rec: dict, task: str, dense_has: bool, pruned_has: bool,
                  warned: set[tuple]) -> None:
    """Gold probabilities on one side only: that side's items predate them (a task with none on either
    side is simply not multiple choice)."""
    if dense_has == pruned_has:
        return
    lacking = rec if dense_has else dense_rec
    if (lacking["path"], task) in warned:
        return
    warned.add((lacking["path"], task))
    log.warning("%s: task %r has no gold-choice probabilities (written before they were kept); rerun that "
                "evaluation for its gold-probability retention", items_path(lacking["path"]), task)


def gold_prob_retention(records: list[dict], tables: RetentionTables, boot: Bootstrap = Bootstrap()) -> pd.DataFrame:
    """Gold-probability retention of every multiple-choice task (GOLD_PROB_COLUMNS), beside its accuracy retention.

    Per pruned checkpoint (``seed`` set, ``seeds`` 1): the pruned and dense mean gold_prob over the
    task's items where both have one (``items``), their ratio, and its item-bootstrap interval, the
    same item draw for dense and pruned (the draw of the accuracy interval of that task). Per
    (setting, calib, task) over seeds (``seed`` empty, ``seeds`` k): the means over seeds, and the
    two-stage interval (the seed draw of retention_summary). ``accuracy_retention*`` is the task's
    retention with the matching interval: from ``tables.per_checkpoint`` on checkpoint rows, from
    ``tables.over_seeds`` on over-seeds rows. A task without gold probabilities (not multiple choice,
    or items written before they were kept) has no rows; none at all gives an empty table.
    """
    rows, draws = _checkpoint_rows(records, boot)
    per_checkpoint = pd.DataFrame(rows, columns=GOLD_PROB_COLUMNS[:GOLD_PROB_COLUMNS.index("gold_prob_retention_low")])
    per_checkpoint = per_checkpoint.sort_values(KEYS, kind="stable")
    out = []
    for group, g in per_checkpoint.groupby([*SET, "dimension", "task"], sort=False):
        set_key, task = group[:len(SET)], group[-1]
        g = g.sort_values("seed", kind="stable")
        per_seed = np.stack([draws[(*set_key, seed), task] for seed in g["seed"]])
        low, high = percentile_interval(per_seed, boot.confidence)
        g = g.assign(gold_prob_retention_low=low, gold_prob_retention_high=high)
        mixed = mix_seeds(per_seed, seed_picks(boot, set_key, tuple(g["seed"])))
        low, high = percentile_interval(mixed[None, :], boot.confidence)
        summary = {**dict(zip([*SET, "dimension", "task"], group)), "seed": pd.NA, "seeds": len(g),
                   "items": g["items"].min(), "gold_prob_retention_low": low[0], "gold_prob_retention_high": high[0],
                   **{c: g[c].mean(skipna=False) for c in ("gold_prob", "dense_gold_prob", "gold_prob_retention")}}
        out += [*g.to_dict("records"), summary]
    table = pd.DataFrame(out, columns=GOLD_PROB_COLUMNS[:GOLD_PROB_COLUMNS.index("accuracy_retention")])
    table = _with_accuracy(table, tables)
    table[["seeds", "items"]] = table[["seeds", "items"]].astype(int)
    floats = GOLD_PROB_COLUMNS[GOLD_PROB_COLUMNS.index("gold_prob"):]
    table[floats] = table[floats].astype(float)
    return table[GOLD_PROB_COLUMNS]


def _with_accuracy(table: pd.DataFrame, tables: RetentionTables) -> pd.DataFrame:
    """Each row's task retention and interval: per checkpoint its item interval, over seeds the two-stage one."""
    per_seed = tables.per_checkpoint[tables.per_checkpoint["level"] == "task"]
    over = tables.over_seeds[tables.over_seeds["level"] == "task"]
    accuracy = pd.concat([per_seed[[*KEYS, "dimension", "name", *_ACCURACY]],
                          over[[*SET, "dimension", "name", *_ACCURACY]].assign(seed=pd.NA)], ignore_index=True)
    accuracy = accuracy.rename(columns={"name": "task", **_ACCURACY})
    accuracy["seed"] = accuracy["seed"].astype("Int64")
    table = table.assign(seed=table["seed"].astype("Int64"))
    return table.merge(accuracy, on=[*KEYS, "dimension", "task"], how="left", validate="one_to_one")


def rank_agreement(gold: pd.DataFrame, settings: Sequence[tuple], sources: Sequence[str]) -> pd.DataFrame:
    """Whether gold-probability retention ranks the single sources like accuracy retention
    (AGREEMENT_COLUMNS), per setting of ``settings`` (e.g. the main block) and multiple-choice task.

    Across the single sources (``sources``) with an over-seeds row of the task: Spearman rho of their
    accuracy retention with their gold-probability retention (both means over seeds;
    calmix.core.stats.spearman, so n < 3 gives NaN), the best source by each, and the median over the
    sources of each two-stage interval's half-width, (high - low) / 2 (fractions).
    """
    over = gold[gold["seed"].isna() & gold["calib"].isin(sources)]
    by_setting = dict(list(over.groupby(GROUP, sort=False)))
    rows = []
    for key in settings:
        if key not in by_setting:
            continue
        for (dim, task), g in by_setting[key].groupby(["dimension", "task"], sort=False):
            rho, p, n, method = spearman(g["accuracy_retention"], g["gold_prob_retention"])
            rows.append({**dict(zip(GROUP, key)), "dimension": dim, "task": task, "rho": rho, "p": p,
                         "p_method": method, "n": n, "best_accuracy": _best(g, "accuracy_retention"),
                         "best_gold_prob": _best(g, "gold_prob_retention"),
                         "accuracy_half_width": _median_half_width(g, "accuracy_retention"),
                         "gold_prob_half_width": _median_half_width(g, "gold_prob_retention")})
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def _best(g: pd.DataFrame, column: str) -> str | None:
    """The source with the highest finite value (on a tie the first by name), as the answer picks the best."""
    finite = g[np.isfinite(g[column].to_numpy(float))]
    if finite.empty:
        return None
    return str(finite.sort_values([column, "calib"], ascending=[False, True], kind="stable")["calib"].iat[0])


def _median_half_width(g: pd.DataFrame, column: str) -> float:
    half = (g[f"{column}_high"].to_numpy(float) - g[f"{column}_low"].to_numpy(float)) / 2
    half = half[np.isfinite(half)]
    return float(np.median(half)) if half.size else np.nan
