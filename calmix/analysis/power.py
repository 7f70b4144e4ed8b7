"""How wide retention's intervals will be, before a study runs (docs/definitions.md#intervals).

Why: a study sized by guesswork answers inside its noise. Per task, dimension and total of one
calibration set: the delta method's variance of each task's paired ratio over the config's item count,
from the pruned and dense per-item scores where they are here, else the dense ones and stated
assumptions, else assumptions alone; plus the calibration seeds' share, as the two-stage seed bootstrap
of calmix.analysis.intervals draws them. ``calmix-plan`` (calmix.costs) prints it, with a finished
study's measured half-widths beside.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd


#: (items, leaves) of lm-eval built-in tasks, the split lm-eval's YAML scores: a plan counts them
#: before their data is fetched (a limit applies per leaf: mmlu's 57 subjects).
LM_EVAL_ITEMS = {"mmlu": (14042, 57), "hellaswag": (10042, 1), "piqa": (1838, 1), "winogrande": (1267, 1),
                 "arc_easy": (2376, 1), "arc_challenge": (1172, 1), "humaneval": (164, 1), "mbpp": (500, 1),
                 "gsm8k": (1319, 1)}


def _assumed(default: float, meaning: str) -> Any:
    return field(default=default, metadata={"help": meaning})


@dataclass(frozen=True)
class Assumptions:
    """What the interval prediction takes where no evaluation says yet, printed with any prediction
    that uses it (each a calmix-plan option). The defaults lean wide: a plan that promises too narrow
    an interval costs a study."""

    retention: float = _assumed(0.8, "each task's retention: pruned / dense score (dense / pruned perplexity)")
    item_correlation: float = _assumed(0.5, "correlation of a mean task's dense and pruned item scores")
    doc_correlation: float = _assumed(0.9, "correlation over documents of the dense and pruned per-word NLL "
                                           "(perplexity tasks)")
    seed_sd: float = _assumed(0.02, "SD over calibration seeds of a task's, a dimension's and the total's "
                                    "retention (fraction)")
    dense_accuracy: float = _assumed(0.6, "a mean task's dense score, items scored 0 or 1, before its dense "
                                          "items exist")
    dense_perplexity: float = _assumed(20.0, "a perplexity task's dense word perplexity before its dense "
                                             "items exist")
    doc_nll_sd: float = _assumed(0.5, "SD over documents of the dense per-word NLL (nats) before the dense "
                                      "items exist")
    doc_words_cv: float = _assumed(1.0, "SD / mean of the documents' word counts before the dense items exist")


@dataclass(frozen=True)
class Spread:
    """One task's retention and per-item variances, what its interval is made of (item_variance)."""

    retention: float
    within: float  # variance over items of one checkpoint's influence on retention
    across: float  # covariance of two seeds' influences on the same items (= within where unseen)
    basis: str


@dataclass(frozen=True)
class Predicted:
    """One row of the prediction: a task, a dimension or the total."""

    level: str
    name: str
    tasks: int
    items: int | None
    retention: float
    item_variance: float
    half_width: float
    basis: str


def influence(dense: pd.DataFrame, pruned: pd.DataFrame, perplexity: bool, higher_is_better: bool = True
              ) -> tuple[float, pd.Series]:
    """A pruned model's task retention from its items paired with the dense model's, and each item's
    influence on it (the delta method's linearisation): a paired bootstrap of n items has variance
    about var(influence) / n. Perplexity: log retention = sum(ll_pruned - ll_dense) / sum(words)."""
    both = dense.merge(pruned, on=["leaf", "doc_id"], suffixes=("_d", "_p")).set_index(["leaf", "doc_id"])
    if perplexity:
        words, delta = both["weight_d"], both["score_p"] - both["score_d"]
        log_ret = delta.sum() / words.sum()
        ret = math.exp(log_ret)
        return ret, ret * (delta - log_ret * words) / words.mean()
    num, den = (both["score_p"], both["score_d"]) if higher_is_better else (both["score_d"], both["score_p"])
    ret = num.mean() / den.mean() if den.mean() != 0 else math.nan
    return ret, (num - ret * den) / den.mean()


def observed_spread(dense: pd.DataFrame, pruned: dict[tuple[str, int], pd.DataFrame], perplexity: bool,
                    higher_is_better: bool = True) -> tuple[Spread, dict[tuple[str, int], float]]:
    """A task's spread from pruned checkpoints' items ({(calib, seed): items}), and its retention per
    checkpoint (for the seeds' share): within from every checkpoint, across from two seeds of one set."""
    fits = {key: influence(dense, items, perplexity, higher_is_better) for key, items in pruned.items()}
    keys = list(fits)
    cov = pd.concat([fits[k][1] for k in keys], axis=1, keys=range(len(keys))).cov(min_periods=2).to_numpy()
    within = float(np.mean(np.diag(cov)))
    pairs = [cov[i, j] for i, a in enumerate(keys) for j, b in enumerate(keys) if a[0] == b[0] and a[1] < b[1]]
    retentions = {k: fits[k][0] for k in keys}
    return (Spread(float(np.mean(list(retentions.values()))), within, float(np.mean(pairs)) if pairs else within,
                   "dense+pruned items"), retentions)


def assumed_spread(dense: pd.DataFrame | None, perplexity: bool, a: Assumptions,
                   higher_is_better: bool = True) -> Spread:
    """A task's spread before pruned items exist: retention a.retention, pruned scores correlated with
    the dense ones, the dense ones from the dense items where there are two or more, else from a.
    Perplexity: a document's pruned per-word NLL is its dense one x k (k giving a.retention),
    correlated a.doc_correlation over documents, independent of their word counts."""
    ret, seen = a.retention, dense is not None and len(dense) > 1
    basis = "dense items + assumptions" if seen else "assumptions"
    if perplexity:
        if seen:
            words = dense["weight"]
            mean_nll, sd_nll = -dense["score"].sum() / words.sum(), float((-dense["score"] / words).std())
            lengths = float((words ** 2).mean() / words.mean() ** 2)
        else:
            mean_nll, sd_nll, lengths = math.log(a.dense_perplexity), a.doc_nll_sd, 1 + a.doc_words_cv ** 2
        k = (mean_nll - math.log(ret)) / mean_nll
        within = ret ** 2 * sd_nll ** 2 * (k ** 2 + 1 - 2 * a.doc_correlation * k) * lengths
        return Spread(ret, within, within, basis)
    if seen:
        scores = dense["score"]
        mean_d, var_d, binary = scores.mean(), float(scores.var()), bool(scores.isin([0, 1]).all())
    else:
        mean_d, var_d, binary = a.dense_accuracy, a.dense_accuracy * (1 - a.dense_accuracy), True
    mean_p = mean_d * ret if higher_is_better else mean_d / ret
    mean_p = min(mean_p, 1.0) if binary else mean_p
    var_p = mean_p * (1 - mean_p) if binary else var_d * (mean_p / mean_d) ** 2
    (var_num, var_den), den = ((var_p, var_d), mean_d) if higher_is_better else ((var_d, var_p), mean_p)
    cov = a.item_correlation * math.sqrt(var_p * var_d)
    within = (var_num + ret ** 2 * var_den - 2 * ret * cov) / den ** 2
    return Spread(ret, within, within, basis)


def item_variance(spread: Spread, items: int, seeds: int) -> float:
    """The two-stage bootstrap's item variance over n items and k seeds. A resample averages k seeds
    drawn with replacement at one item draw: two of its picks are one seed with chance 1/k, else two
    seeds whose item noise covaries by `across`; each seed's noise is a multinomial resample of n items,
    variance (n - 1) / n^2 x the per-item variance. (2k - 1) within + (k - 1)^2 across, over k^2."""
    if items == 1:
        return 0.0
    k = seeds
    return (spread.within * (2 * k - 1) + spread.across * (k - 1) ** 2) / k ** 2 * (items - 1) / items ** 2


def seed_variance(sd2: float, seeds: int) -> float:
    """The two-stage bootstrap's seed variance: the mean of k seeds drawn with replacement from k has
    variance (their population variance) / k, of expectation sd^2 (k - 1) / k^2."""
    return sd2 * (seeds - 1) / seeds ** 2


def _pooled_seed_variance(values: dict[tuple[str, int], float]) -> float | None:
    """Variance over seeds within calibration sets, pooled over sets (ddof 1); None without a set of two."""
    by_set: dict[str, list[float]] = {}
    for (calib, _), v in values.items():
        by_set.setdefault(calib, []).append(v)
    parts = [(len(v) - 1, float(np.var(v, ddof=1))) for v in by_set.values() if len(v) > 1]
    return sum(df * var for df, var in parts) / sum(df for df, _ in parts) if parts else None


def _items_there(config: dict[str, Any], task: str, root: Path) -> tuple[int, int] | None:
    """(items, leaves) a task has, where something here says: the world's count, the items file, the
    offline builder's count, lm-eval's split."""
    from calmix.evaluation.offline import item_count
    from calmix.evaluation.tasks import items_spec

    path = root / "eval" / "items" / f"{task}.jsonl"
    if task.startswith("world_"):
        return config["world"]["eval_items"], 1
    if path.is_file():
        return sum(1 for line in path.read_text().splitlines() if line.strip()), 1
    spec = items_spec(task)
    counted = item_count(task, spec) if spec else None
    return (counted, 1) if counted else LM_EVAL_ITEMS.get(task)


def planned_items(config: dict[str, Any], dim: str, task: str, dense: dict | None = None,
                  root: Path = Path("results")) -> tuple[int | None, str | None]:
    """How many items the study scores of a task, and a note where that is a guess: its limit (the
    dimension's task_limits, limit, else evaluation.limit, per leaf) against the items there are (the
    dense evaluation's where it had the same limit or none, else _items_there)."""
    spec = config["evaluation"]["dimensions"][dim]
    cap = spec.get("task_limits", {}).get(task, spec.get("limit", config["evaluation"].get("limit")))
    there = None
    if dense is not None:
        settings = dense["record"].get("settings", {})
        then = settings.get("task_limits", {}).get(task, settings.get("limit"))
        items = dense["items"][dense["items"]["task"] == task]
        if then == cap:
            return len(items), None
        there = (len(items), items["leaf"].nunique()) if then is None else None
    there = there or _items_there(config, task, root)
    if there is None:
        return cap, (f"{task}: {cap} item{'s' * (cap != 1)} assumed (its limit; no items here to count: "
                     "snakemake prefetch / rule task_items)" if cap
                     else f"{task}: item count unknown (no items here and no limit)")
    return (min(there[0], there[1] * cap) if cap else there[0]), None


def _evaluations(root: Path, model: str, method: str, target: str, dim: str
                 ) -> tuple[dict | None, dict[tuple[str, int], pd.DataFrame]]:
    """The dense evaluation of a dimension ({"record", "items"}) and the setting's pruned items by
    (calib, seed), those that are here."""
    from calmix.evaluation.items import read_items

    base = root / "eval" / model
    record, items = base / "dense" / f"{dim}.json", base / "dense" / f"{dim}.items.parquet"
    dense = ({"record": json.loads(record.read_text()), "items": read_items(items)}
             if record.is_file() and items.is_file() else None)
    pruned = {}
    for path in sorted((base / method / target).glob(f"*/seed*/{dim}.items.parquet")):
        seed = re.fullmatch(r"seed(\d+)", path.parent.name)
        if seed:
            pruned[(path.parent.parent.name, int(seed.group(1)))] = read_items(path)
    return dense, pruned


def _sum_items(parts: list[Predicted]) -> int | None:
    return None if any(p.items is None for p in parts) else sum(p.items for p in parts)


def predict_intervals(config: dict[str, Any], model: str, method: str, target: str, seeds: int,
                      a: Assumptions = Assumptions(), root: Path = Path("results")) -> tuple[list[Predicted], list[str]]:
    """Predicted half-widths of one calibration set's retention intervals (k seeds, the setting's
    method and target path label), per task, dimension and total, and notes on guessed item counts.

    Normal approximation of the two-stage percentile bootstrap: z x sqrt(item variance + seed
    variance). Tasks' item draws are independent, so a dimension's item variance is the mean of its
    tasks' over their number, the total's likewise over dimensions; the seeds' share is each level's
    own (seeds move a checkpoint's tasks together), observed where a set has two seeds here."""
    from calmix.evaluation.tasks import heldout_text_tasks

    z = NormalDist().inv_cdf((1 + config["report"]["bootstrap"]["confidence"]) / 2)
    rows: list[Predicted] = []
    notes: list[str] = []

    def row(level: str, name: str, tasks: int, items: int | None, ret: float, var: float, sd2: float | None,
            basis: str) -> Predicted:
        if sd2 is None and seeds > 1 and basis == "dense+pruned items":
            basis += ", seed SD assumed"
        width = z * math.sqrt(var + seed_variance(a.seed_sd ** 2 if sd2 is None else sd2, seeds))
        return Predicted(level, name, tasks, items, ret, var, width, basis)

    def basis_of(parts: list[Predicted]) -> str:
        found = {p.basis.split(",")[0] for p in parts}
        return found.pop() if len(found) == 1 else "mixed"

    dims: list[Predicted] = []
    by_dimension: dict[tuple[str, int], list[float]] = {}  # a checkpoint's dimension retentions
    for dim, spec in config["evaluation"]["dimensions"].items():
        dense, pruned = _evaluations(root, model, method, target, dim)
        tasks: list[Predicted] = []
        by_task: dict[tuple[str, int], list[float]] = {}
        for task in spec["tasks"]:
            n, note = planned_items(config, dim, task, dense, root)
            notes += [note] if note else []
            entry = dense["record"]["tasks"].get(task) if dense else None
            perplexity = entry["aggregation"] == "perplexity" if entry else bool(heldout_text_tasks([task]))
            higher = entry["higher_is_better"] if entry else not perplexity
            d_items = dense["items"][dense["items"]["task"] == task] if dense else None
            p_items = {key: t[t["task"] == task] for key, t in pruned.items() if (t["task"] == task).any()}
            sd2 = None
            if d_items is not None and len(d_items) > 1 and p_items:
                spread, retentions = observed_spread(d_items, p_items, perplexity, higher)
                sd2 = _pooled_seed_variance(retentions)
                for key, r in retentions.items():
                    by_task.setdefault(key, []).append(r)
            else:
                spread = assumed_spread(d_items, perplexity, a, higher)
            var = item_variance(spread, n, seeds) if n else math.nan
            tasks.append(row("task", task, 1, n, spread.retention, var, sd2, spread.basis))
        whole = {key: float(np.mean(v)) for key, v in by_task.items() if len(v) == len(spec["tasks"])}
        for key, r in whole.items():
            by_dimension.setdefault(key, []).append(r)
        dims.append(row("dimension", dim, len(tasks), _sum_items(tasks), float(np.mean([t.retention for t in tasks])),
                        sum(t.item_variance for t in tasks) / len(tasks) ** 2, _pooled_seed_variance(whole),
                        basis_of(tasks)))
        rows += [dims[-1], *tasks]
    whole = {key: float(np.mean(v)) for key, v in by_dimension.items() if len(v) == len(dims)}
    rows.append(row("total", "total", sum(d.tasks for d in dims), _sum_items(dims),
                    float(np.mean([d.retention for d in dims])), sum(d.item_variance for d in dims) / len(dims) ** 2,
                    _pooled_seed_variance(whole), basis_of(dims)))
    return rows, notes


def measured_half_widths(path: str | Path) -> pd.DataFrame:
    """A finished study's interval half-widths, (high - low) / 2, per calibration set, dimension and
    total, from its results/tables/retention_summary.parquet: what a prediction is checked against."""
    summary = pd.read_parquet(path)
    rows = summary[summary["level"].isin(["dimension", "total"])]
    columns = ["model", "method", "target", "calib", "level", "name", "seeds", "retention", "half_width"]
    return rows.assign(half_width=(rows["retention_high"] - rows["retention_low"]) / 2)[columns].reset_index(drop=True)


def intervals_report(config: dict[str, Any], a: Assumptions = Assumptions(), root: Path = Path("results")) -> str:
    """The prediction as text, for the main block's first setting (its method and target, every seed),
    with a finished study's measured half-widths beside where its summary table is here."""
    from calmix.pruning import plan as pruning_plan
    from calmix.pruning import registry, targets

    method, target = pruning_plan.settings(config["pruning"])[0]
    seeds = 1 if registry.parse_label(method)[0].data_free else len(config["calibration"]["seeds"])
    table = root / "tables" / "retention_summary.parquet"
    measured = measured_half_widths(table) if table.is_file() else None
    confidence = config["report"]["bootstrap"]["confidence"]
    lines, used = [], False
    for model in config["models"]:
        rows, notes = predict_intervals(config, model, method, target, seeds, a, root)
        used |= any("assumption" in r.basis or "assumed" in r.basis for r in rows)
        width = max(len(r.name) + (2 if r.level == "task" else 0) for r in rows) + 2
        lines += ["", f"Retention intervals of one calibration set, predicted: model {model}, {method} "
                      f"{targets.display(target)}, {seeds} seed{'s' * (seeds > 1)}, {confidence:.0%} percentile "
                      "bootstrap over items and seeds; half-width in points of retention",
                  (f"  {'':<{width}}{'tasks':>6}{'items':>7}{'retention':>11}{'± points':>10}  {'basis':<36}"
                   + ("measured ± (sets: min-max)" if measured is not None else "")).rstrip()]
        for r in rows:
            name = f"  {r.name}" if r.level == "task" else r.name
            line = (f"  {name:<{width}}{r.tasks if r.level != 'task' else '':>6}{r.items if r.items else '?':>7}"
                    f"{r.retention:>11.1%}{100 * r.half_width:>10.1f}  {r.basis:<36}")
            if measured is not None and r.level != "task":
                m = measured[(measured["model"] == model) & (measured["method"] == method)
                             & (measured["target"] == targets.display(target)) & (measured["level"] == r.level)
                             & (measured["name"] == r.name) & (measured["seeds"] == seeds)]["half_width"]
                line += (f"{100 * m.median():.1f} ({len(m)}: {100 * m.min():.1f}-{100 * m.max():.1f})"
                         if len(m) else "none")
            lines.append(line.rstrip())
        lines += [f"  note: {n}" for n in notes]
    if used:
        lines.append("  assumed where the basis says so (calmix-plan --help says what each is): "
                     + " ".join(f"--{f.name.replace('_', '-')} {getattr(a, f.name):g}" for f in fields(a)))
    return "\n".join(lines)
