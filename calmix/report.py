"""Retention, correlations, plots and the markdown report: the last stage of the calmix DAG.

Everything upstream (calibration shards, OIT metrics, pruned checkpoints, lm-eval runs) ends in two
kinds of input, and this module turns them into the study's answer:

1. eval records (one JSON per pruned model and dimension, one per dense model and dimension), which
   :func:`retention_table` turns into retention at task, dimension and total level;
2. the OIT metric table (one row per calibration set), which :func:`correlation_table` correlates,
   metric by metric and dimension by dimension, with retention across calibration sources.

The plots and the markdown summary only read those two tables, so anyone can rebuild them from the
CSV/Parquet files without re-running the workflow.

Definitions, exactly as computed here (the same text goes into the report):

- Task retention = pruned score / dense score, the dense score taken from the same model and task.
- Dimension retention = mean of its tasks' retentions.
- Total retention = mean of the dimension retentions.
- Chance-adjusted retention = (pruned - chance) / (dense - chance) at task level, then the same means
  for dimension and total.
- A dense score of 0 (or dense <= chance in the chance-adjusted view) gives NaN, with a logged
  warning, not inf; a NaN task makes its dimension and the total NaN (means do not skip NaN).

Outputs are written atomically (temporary file in the same directory, then ``os.replace``) and
deterministically (no timestamps in PNGs or markdown), so unchanged inputs give identical bytes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from calmix.stats import benjamini_hochberg, spearman

log = logging.getLogger(__name__)

DENSE = "dense"
TOTAL = "total"
LEVELS = ("task", "dimension", TOTAL)
KEYS = ["model", "method", "sparsity", "calib", "seed"]
GROUP = ["model", "method", "sparsity"]
METRIC_KEYS = ["model", "calib", "seed"]
RETENTION_COLUMNS = [
    *KEYS, "level", "name", "dimension", "metric",
    "score", "dense_score", "chance", "retention", "chance_adjusted",
]
CORRELATION_COLUMNS = [*GROUP, "metric", "dimension", "rho", "p", "p_method", "q", "n"]
ALPHA = 0.05

DEFINITIONS = [
    "Task retention = pruned score / dense score, the dense score taken from the same model and task.",
    "Dimension retention = mean of its tasks' retentions.",
    "Total retention = mean of the dimension retentions.",
    "Chance-adjusted retention = (pruned - chance) / (dense - chance) at task level, then the same "
    "means for dimension and total (chance = 1/number of choices for multiple choice, 0 for generation).",
    "A dense score of 0 (or dense <= chance for the chance-adjusted view) gives NaN, not inf; "
    "a NaN task makes its dimension and the total NaN.",
    "Retention tables show the mean over seeds, in percent.",
    "Spearman rho and its p-value (calmix.stats.spearman) are computed across calibration sources of "
    "one (model, method, sparsity), after averaging each metric and each retention per source over "
    "seeds; sources with a NaN value are left out of that pair (n counts those used); n < 3 gives NaN. "
    "p is exact (all n! re-pairings) for n <= 9, else scipy's t approximation (column p_method). "
    "q is the Benjamini-Hochberg adjusted p across the whole metric x dimension grid of that "
    "(model, method, sparsity); '*' and the opposite-sign pairs use q < 0.05.",
]

_REQUIRED_RECORD_KEYS = ("model", "method", "sparsity", "calib", "seed", "dimension", "tasks")


# --------------------------------------------------------------------------------------------------
# Loading and retention
# --------------------------------------------------------------------------------------------------

def load_eval_records(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict]:
    """Read eval-record JSON files, failing early (naming the file) on a malformed one.

    A single path is accepted as well as an iterable of paths; order is preserved, and it decides
    the order in which dimensions and tasks appear in the tables.
    """
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
        records.append(record)
    return records


def _safe_ratio(num: float, den: float, *, undefined: bool, warn_key: tuple, warned: set,
                why: str) -> float:
    """num / den, or NaN (warned once per key) when the ratio is undefined."""
    if undefined or not math.isfinite(den):
        if warn_key not in warned:
            warned.add(warn_key)
            log.warning("%s: %s; retention is NaN", warn_key, why)
        return math.nan
    return num / den


def _mean(values: Sequence[float]) -> float:
    """Plain mean that propagates NaN (a NaN part makes the whole undefined, not silently smaller)."""
    return float(np.mean(values)) if len(values) else math.nan


def retention_table(records: list[dict]) -> pd.DataFrame:
    """Retention of every pruned model relative to its dense model, at three levels.

    One row per (model, method, sparsity, calib, seed, level, name), level in
    ("task", "dimension", "total"); ``name`` is the task, the dimension or "total".

    - Task retention = pruned score / dense score, the dense score taken from the same model and
      task (the dense record of the same model and dimension).
    - Dimension retention = mean of its tasks' retentions.
    - Total retention = mean of the dimension retentions.
    - chance_adjusted = (pruned - chance) / (dense - chance) at task level, then the same means.

    A dense score of 0 (or dense <= chance for chance_adjusted) gives NaN with a logged warning;
    means propagate NaN. ``score``, ``dense_score``, ``chance`` and ``metric`` are filled at task
    level only; ``dimension`` is the task's dimension (the name itself for dimension rows, "total"
    for total rows). Raises ValueError for a pruned record without a dense record (naming model and
    dimension), a task missing from the dense record, a metric or chance that differs between
    pruned and dense, or duplicate records.
    """
    dense: dict[tuple, dict] = {}
    for rec in records:
        if rec["method"] == DENSE:
            key = (rec["model"], rec["dimension"])
            if key in dense:
                raise ValueError(f"two dense eval records for model {key[0]!r}, dimension {key[1]!r}")
            dense[key] = rec

    # Pruned records grouped by (model, method, sparsity, calib, seed), in first-appearance order.
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

    warned: set[tuple] = set()
    rows: list[dict] = []
    dims_by_model: dict[str, set[frozenset]] = {}
    for key, recs in groups.items():
        base = dict(zip(KEYS, key))
        task_rows, dim_rows = [], []
        for rec in recs:
            dim = rec["dimension"]
            dense_tasks = dense[(rec["model"], dim)]["tasks"]
            rets, adjs = [], []
            for task, entry in rec["tasks"].items():
                if task not in dense_tasks:
                    raise ValueError(f"dense eval record for model {rec['model']!r}, dimension "
                                     f"{dim!r} lacks task {task!r}")
                d_entry = dense_tasks[task]
                if entry.get("metric") != d_entry.get("metric"):
                    raise ValueError(
                        f"model {rec['model']!r}, task {task!r}: pruned metric {entry.get('metric')!r}"
                        f" differs from dense metric {d_entry.get('metric')!r}")
                chance = float(d_entry["chance"])
                if not math.isclose(float(entry["chance"]), chance, abs_tol=1e-12):
                    raise ValueError(f"model {rec['model']!r}, task {task!r}: pruned chance "
                                     f"{entry['chance']} differs from dense chance {chance}")
                score, d_score = float(entry["score"]), float(d_entry["score"])
                ret = _safe_ratio(score, d_score, undefined=d_score == 0,
                                  warn_key=(rec["model"], task, "retention"), warned=warned,
                                  why=f"dense score is {d_score}")
                adj = _safe_ratio(score - chance, d_score - chance, undefined=d_score <= chance,
                                  warn_key=(rec["model"], task, "chance_adjusted"), warned=warned,
                                  why=f"dense score {d_score} <= chance {chance}")
                rets.append(ret)
                adjs.append(adj)
                task_rows.append({**base, "level": "task", "name": task, "dimension": dim,
                                  "metric": entry.get("metric"), "score": score,
                                  "dense_score": d_score, "chance": chance,
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
# Correlations
# --------------------------------------------------------------------------------------------------

def metric_columns(metrics: pd.DataFrame) -> list[str]:
    """The OIT metric columns of a metric table: every numeric column but model, calib, seed."""
    return [c for c in metrics.columns
            if c not in METRIC_KEYS and pd.api.types.is_numeric_dtype(metrics[c])]


def _dimension_order(retention: pd.DataFrame) -> list[str]:
    """Dimensions in first-appearance order, then "total"."""
    dims = retention.loc[retention["level"] == "dimension", "name"]
    return [*pd.unique(dims), TOTAL]


def correlation_table(metrics: pd.DataFrame, retention: pd.DataFrame,
                      calibs: list[str] | None = None, *, value: str = "retention") -> pd.DataFrame:
    """Spearman rho between every OIT metric and every dimension's (and total) retention.

    For each (model, method, sparsity): each metric and each retention (column ``value``,
    "retention" or "chance_adjusted") is first averaged per calibration set over its seeds (the two
    averages are taken separately, each over the seeds it has); then rho and p come from
    :func:`calmix.stats.spearman` across calibration sets. ``calibs`` restricts the sets (e.g. to the
    single sources, leaving out mixes and self-generated sets); a listed calib absent from either
    table is a ValueError. With ``calibs=None`` every calib present in both tables is used.
    Pairs with NaN are dropped (``n`` counts the sets used); n < 3 or constant input gives NaN rho.

    Columns: model, method, sparsity, metric, dimension, rho, p, p_method ("exact", "t" or
    "none"; see :func:`calmix.stats.spearman`), q (Benjamini-Hochberg over the group's grid), n.
    """
    missing_keys = [k for k in METRIC_KEYS if k not in metrics.columns]
    if missing_keys:
        raise ValueError(f"metric table lacks columns {missing_keys}")
    names = metric_columns(metrics)
    if not names:
        raise ValueError("metric table has no numeric metric columns")
    if value not in ("retention", "chance_adjusted"):
        raise ValueError(f"value must be 'retention' or 'chance_adjusted', not {value!r}")

    m = metrics if calibs is None else metrics[metrics["calib"].isin(calibs)]
    m_mean = m.groupby(["model", "calib"], sort=False, dropna=False)[names].mean(skipna=False)
    r = retention[retention["level"].isin(["dimension", TOTAL])]
    if calibs is not None:
        r = r[r["calib"].isin(calibs)]
    r_mean = (r.groupby([*GROUP, "calib", "name"], sort=False, dropna=False)[value]
              .mean(skipna=False).unstack("name"))
    dims = [d for d in _dimension_order(retention) if d in r_mean.columns]

    rows = []
    for key, block in r_mean.groupby(level=GROUP, sort=False, dropna=False):
        model = key[0]
        block = block.droplevel(GROUP)
        have_metrics = (m_mean.loc[model].index if model in m_mean.index.get_level_values(0)
                        else pd.Index([]))
        if calibs is not None:
            for where, present in (("retention", block.index), ("metric", have_metrics)):
                absent = [c for c in calibs if c not in present]
                if absent:
                    raise ValueError(f"model {model!r}, method {key[1]!r}, sparsity {key[2]}: "
                                     f"calibration sets {absent} missing from the {where} table")
            used = list(calibs)
        else:
            used = [c for c in block.index if c in have_metrics]
            left = [c for c in block.index if c not in have_metrics]
            if left:
                log.warning("model %r: no metrics for calibration sets %s; left out of the "
                            "correlations", model, left)
        x_all = m_mean.loc[model].reindex(used) if used else None
        y_all = block.reindex(used)
        for name in names:
            for dim in dims:
                if used:
                    rho, p, n, how = spearman(x_all[name].to_numpy(float), y_all[dim].to_numpy(float))
                else:
                    rho, p, n, how = math.nan, math.nan, 0, "none"
                rows.append({"model": key[0], "method": key[1], "sparsity": key[2],
                             "metric": name, "dimension": dim, "rho": rho, "p": p, "p_method": how, "n": n})
    out = pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
    out["q"] = np.nan
    for _, index in out.groupby(GROUP, sort=False, dropna=False).groups.items():
        out.loc[index, "q"] = benjamini_hochberg(out.loc[index, "p"].to_numpy(float))
    out["rho"] = out["rho"].astype(float)
    out["p"] = out["p"].astype(float)
    out["n"] = out["n"].astype(int)
    return out


def opposite_sign_pairs(corr: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Trade-offs: same metric, rho > 0 for one dimension and rho < 0 for another, both significant
    after correction (q < alpha).

    "total" is not a dimension here. One row per pair; columns model, method, sparsity, metric,
    dim_pos, rho_pos, q_pos, dim_neg, rho_neg, q_neg.
    """
    cols = [*GROUP, "metric", "dim_pos", "rho_pos", "q_pos", "dim_neg", "rho_neg", "q_neg"]
    sig = corr[(corr["dimension"] != TOTAL) & (corr["q"] < alpha)]
    rows = []
    for key, g in sig.groupby([*GROUP, "metric"], sort=False, dropna=False):
        for _, pos in g[g["rho"] > 0].iterrows():
            for _, neg in g[g["rho"] < 0].iterrows():
                rows.append(dict(zip([*GROUP, "metric"], key), dim_pos=pos["dimension"],
                                 rho_pos=pos["rho"], q_pos=pos["q"], dim_neg=neg["dimension"],
                                 rho_neg=neg["rho"], q_neg=neg["q"]))
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------------------------------
# Atomic, deterministic output
# --------------------------------------------------------------------------------------------------

def _atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then move it into place.

    Readers (and Snakemake) never see a half-written file, and a failure leaves no debris.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
    return _atomic_write(path, write)


def write_table(df: pd.DataFrame, stem: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``stem.csv`` (for people) and ``stem.parquet`` (typed, for code), both atomically.

    The suffixes are appended to ``stem`` (so "retention_0.6" stays intact). Returns both paths.
    """
    stem = str(stem)
    csv = _atomic_write(stem + ".csv", lambda tmp: df.to_csv(tmp, index=False))
    parquet = _atomic_write(stem + ".parquet", lambda tmp: df.to_parquet(tmp, index=False))
    return csv, parquet


def _save_png(fig: Figure, path: str | os.PathLike) -> Path:
    """Save with Agg and no metadata that varies between runs, so bytes are reproducible."""
    return _atomic_write(path, lambda tmp: fig.savefig(
        tmp, format="png", dpi=120, metadata={"Software": None}))


def _new_figure(width: float, height: float) -> Figure:
    """A Figure bound to the Agg canvas, independent of pyplot's global backend and state."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _group_title(key: tuple) -> str:
    model, method, sparsity = key
    return f"{model} · {method} · sparsity {float(sparsity):g}"


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------

def plot_rho_heatmap(corr: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Heatmap of Spearman rho, metric (rows) x dimension (columns), one panel per
    (model, method, sparsity); colour range fixed to -1..1, '*' marks q < 0.05 (Benjamini-Hochberg), NaN is grey."""
    if corr.empty:
        raise ValueError("correlation table is empty; nothing to plot")
    metrics = list(pd.unique(corr["metric"]))
    dims = list(pd.unique(corr["dimension"]))
    groups = list(corr.groupby(GROUP, sort=False, dropna=False))
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.85")
    fig = _new_figure(1.2 + 1.1 * len(dims) * len(groups) + 1.0, 1.2 + 0.45 * len(metrics))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    image = None
    for ax, (key, g) in zip(axes, groups):
        g = g.set_index(["metric", "dimension"])
        rho = g["rho"].unstack("dimension").reindex(index=metrics, columns=dims)
        p = g["q"].unstack("dimension").reindex(index=metrics, columns=dims)
        image = ax.imshow(np.ma.masked_invalid(rho.to_numpy(float)), cmap=cmap, vmin=-1, vmax=1,
                          aspect="auto")
        for i in range(len(metrics)):
            for j in range(len(dims)):
                r, pv = rho.iat[i, j], p.iat[i, j]
                text = "n/a" if not np.isfinite(r) else f"{r:+.2f}" + ("*" if pv < ALPHA else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if np.isfinite(r) and abs(r) > 0.6 else "black")
        ax.set_xticks(range(len(dims)), dims, rotation=30, ha="right")
        ax.set_yticks(range(len(metrics)), metrics)
        ax.set_title(_group_title(key), fontsize=9)
    fig.colorbar(image, ax=list(axes), label="Spearman rho (* q < 0.05, BH-corrected)", shrink=0.9)
    return _save_png(fig, path)


def _per_calib(retention: pd.DataFrame, value: str = "retention") -> dict[tuple, pd.DataFrame]:
    """Per (model, method, sparsity): calib x (dimensions..., total) in percent, mean over seeds,
    sorted by total descending (ties by calib name), plus a 'seeds' column."""
    r = retention[retention["level"].isin(["dimension", TOTAL])]
    dims = _dimension_order(retention)
    out = {}
    for key, g in r.groupby(GROUP, sort=False, dropna=False):
        table = (g.groupby(["calib", "name"], sort=False, dropna=False)[value]
                 .mean(skipna=False).unstack("name") * 100.0)
        table = table.reindex(columns=[d for d in dims if d in table.columns])
        seeds = g.groupby("calib", sort=False, dropna=False)["seed"].nunique(dropna=False)
        table.insert(0, "seeds", seeds.reindex(table.index).astype(int))
        table.index = table.index.astype(str)
        table = (table.rename_axis("calib").reset_index()
                 .sort_values([TOTAL, "calib"], ascending=[False, True], na_position="last")
                 .set_index("calib"))
        out[key] = table
    return out


def plot_retention(retention: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Grouped bars of retention (%) per calibration source (x) and dimension (bars), plus total,
    mean over seeds; one panel per (model, method, sparsity), sources sorted by total."""
    tables = _per_calib(retention)
    if not tables:
        raise ValueError("retention table has no dimension rows; nothing to plot")
    n_calib = max(len(t) for t in tables.values())
    fig = _new_figure(max(6.0, 1.0 + 0.9 * n_calib), 3.6 * len(tables))
    axes = fig.subplots(len(tables), 1, squeeze=False)[:, 0]
    palette = colormaps["tab10"]
    for ax, (key, table) in zip(axes, tables.items()):
        cols = [c for c in table.columns if c != "seeds"]
        width = 0.8 / len(cols)
        x = np.arange(len(table))
        for k, col in enumerate(cols):
            color = "0.25" if col == TOTAL else palette(k % 10)
            ax.bar(x + (k - (len(cols) - 1) / 2) * width, table[col].to_numpy(float), width,
                   label=col, color=color)
        ax.set_xticks(x, table.index, rotation=35, ha="right")
        ax.set_ylabel("retention (%)")
        ax.set_ylim(bottom=0)
        ax.set_title(_group_title(key), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _save_png(fig, path)


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------

def _to_markdown(df: pd.DataFrame) -> str:
    """Cells must already be strings: numbers are formatted by the caller, never re-parsed."""
    return df.astype(str).to_markdown(index=False, disable_numparse=True)


def _pct(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.1f}"


def _fmt_p(p: float) -> str:
    return "n/a" if not np.isfinite(p) else ("<0.001" if p < 0.001 else f"={p:.3f}")


def _fmt_rho(rho: float, p: float, q: float | None = None) -> str:
    """'+0.71 (p=0.004, q=0.02)'; 'n/a' where rho is undefined."""
    if not np.isfinite(rho):
        return "n/a"
    return f"{rho:+.2f} (p{_fmt_p(p)}" + ("" if q is None else f", q{_fmt_p(q)}") + ")"


def _fmt_num(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.4g}"


def _opposite_sign_line(corr: pd.DataFrame) -> str:
    """One line naming every metric whose significant rhos have opposite signs across dimensions."""
    pairs = opposite_sign_pairs(corr)
    if pairs.empty:
        return f"Opposite-sign pairs (q < {ALPHA:g}): none."
    parts = []
    for metric, g in pairs.groupby("metric", sort=False):
        pos = g.drop_duplicates("dim_pos")
        neg = g.drop_duplicates("dim_neg")
        plus = ", ".join(f"{r.dim_pos} {r.rho_pos:+.2f} (q{_fmt_p(r.q_pos)})" for r in pos.itertuples())
        minus = ", ".join(f"{r.dim_neg} {r.rho_neg:+.2f} (q{_fmt_p(r.q_neg)})" for r in neg.itertuples())
        parts.append(f"{metric}: {plus} vs {minus}")
    return f"Opposite-sign pairs (q < {ALPHA:g}): " + "; ".join(parts) + "."


def _glance(tables: dict[tuple, pd.DataFrame]) -> pd.DataFrame:
    """One row per (model, method, sparsity): mean retention per dimension and total, best and worst set."""
    rows = []
    for key, table in tables.items():
        values = table.drop(columns="seeds")
        row = {"setting": _group_title(key), "sets": str(len(table))}
        row.update({col: _pct(values[col].mean(skipna=False)) for col in values.columns})
        ranked = values[TOTAL].dropna()
        row["best"] = f"{ranked.idxmax()} {_pct(ranked.max())}" if len(ranked) else "n/a"
        row["worst"] = f"{ranked.idxmin()} {_pct(ranked.min())}" if len(ranked) else "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


def _best_worst(table: pd.DataFrame) -> pd.DataFrame:
    """Best and worst source per dimension (and total) and the spread in percentage points."""
    rows = []
    for col in [c for c in table.columns if c != "seeds"]:
        s = table[col].dropna()
        if s.empty:
            rows.append([col, "n/a", "n/a", "n/a", "n/a", "n/a"])
            continue
        best, worst = s.idxmax(), s.idxmin()
        rows.append([col, best, _pct(s[best]), worst, _pct(s[worst]), _pct(s[best] - s[worst])])
    return pd.DataFrame(rows, columns=["dimension", "best", "best (%)", "worst", "worst (%)",
                                       "spread (points)"])


def _retention_markdown(table: pd.DataFrame) -> str:
    shown = table.copy()
    for col in shown.columns:
        shown[col] = shown[col].map(str) if col == "seeds" else shown[col].map(_pct)
    return _to_markdown(shown.reset_index())


def write_markdown(retention: pd.DataFrame, corr: pd.DataFrame, metrics: pd.DataFrame,
                   path: str | os.PathLike, *, title: str = "calmix report",
                   notes: Sequence[str] = ()) -> Path:
    """Write the study's summary (results/report.md) atomically.

    Sections: notes, definitions (as computed), dense scores per task, then per
    (model, method, sparsity): retention (%) per calib x dimension + total sorted by total
    descending, the chance-adjusted view, best/worst source per dimension with the spread in
    points, the rho/p table ('+0.71 (p=0.004)') and a line naming opposite-sign pairs; finally the
    OIT metric table (mean over seeds). No timestamps, so equal inputs give equal bytes.
    """
    out: list[str] = [f"# {title}", ""]
    if notes:
        out += [f"- {n}" for n in notes] + [""]
    out += ["## Definitions", ""] + [f"- {d}" for d in DEFINITIONS] + [""]

    tasks = retention[retention["level"] == "task"]
    dense = tasks.drop_duplicates(["model", "dimension", "name"])
    out += ["## Dense scores", ""]
    if dense.empty:
        out += ["No task-level retention rows.", ""]
    else:
        shown = pd.DataFrame({
            "model": dense["model"].astype(str), "dimension": dense["dimension"].astype(str),
            "task": dense["name"].astype(str), "metric": dense["metric"].astype(str),
            "dense score": dense["dense_score"].map(lambda v: f"{v:.3f}"),
            "chance": dense["chance"].map(lambda v: f"{v:.3f}")})
        out += [_to_markdown(shown), ""]

    plain, adjusted = _per_calib(retention), _per_calib(retention, "chance_adjusted")
    if plain:
        out += ["## Methods at a glance", "",
                "Retention (%) per pruning setting: mean over calibration sets (each first averaged over "
                "seeds), and the best and worst set by total retention.", "",
                _to_markdown(_glance(plain)), ""]
    corr_groups = {k: g for k, g in corr.groupby(GROUP, sort=False, dropna=False)}
    for key, table in plain.items():
        out += [f"## {_group_title(key)}", "", "### Retention (%)", "",
                "Mean over seeds; sorted by total retention, descending.", "",
                _retention_markdown(table), "",
                "### Chance-adjusted retention (%)", "", _retention_markdown(adjusted[key]), "",
                "### Best and worst source per dimension", "",
                _to_markdown(_best_worst(table)), ""]
        g = corr_groups.get(key)
        out += ["### Spearman rho between OIT metrics and retention", ""]
        if g is None or g.empty:
            out += ["No correlations computed.", ""]
            continue
        ns = sorted(set(g["n"].astype(int)))
        n_text = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
        rho = g.assign(cell=[_fmt_rho(r, p, q) for r, p, q in zip(g["rho"], g["p"], g["q"])])
        grid = (rho.pivot(index="metric", columns="dimension", values="cell")
                .reindex(index=pd.unique(g["metric"]), columns=pd.unique(g["dimension"])))
        out += [f"Across n = {n_text} calibration sources.", "",
                _to_markdown(grid.rename_axis(None, axis=1).reset_index()), "",
                _opposite_sign_line(g), ""]

    out += ["## OIT metrics of the calibration sets", "", "Mean over seeds.", ""]
    names = metric_columns(metrics)
    for model, g in metrics.groupby("model", sort=False, dropna=False):
        mean = g.groupby("calib", sort=False, dropna=False)[names].mean(skipna=False)
        shown = mean.map(_fmt_num).rename_axis("calib").reset_index()
        shown["calib"] = shown["calib"].astype(str)
        out += [f"### {model}", "", _to_markdown(shown), ""]

    return _write_text(path, "\n".join(out).rstrip("\n") + "\n")
