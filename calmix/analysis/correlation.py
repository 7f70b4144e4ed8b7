"""Spearman correlations of OIT metrics with retention across calibration sources.

Why: the study asks which property of calibration data predicts which capability survives pruning;
a rank correlation across sources, with a multiple-testing correction over the whole metric x
dimension grid, answers that without assuming a linear relation. Definitions:
docs/definitions.md#spearman-correlation (per-source means over seeds, then rho across sources),
docs/definitions.md#p-value, docs/definitions.md#benjaminihochberg-q (q over one setting's grid),
docs/definitions.md#rho-interval-over-seeds and docs/definitions.md#opposite-sign-pairs. The
statistics themselves are calmix.core.stats.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection

import numpy as np
import pandas as pd

from calmix.analysis.intervals import Bootstrap
from calmix.analysis.retention import GROUP, TOTAL
from calmix.core.stats import benjamini_hochberg, keyed_rng, percentile_interval, rowwise_spearman, spearman

log = logging.getLogger(__name__)

METRIC_KEYS = ["model", "calib", "seed"]
CORRELATION_COLUMNS = [*GROUP, "metric", "dimension", "rho", "rho_low", "rho_high", "p", "p_method", "q", "n"]
ALPHA = 0.05


def metric_columns(metrics: pd.DataFrame) -> list[str]:
    """The OIT metric columns of a metric table: every numeric column but model, calib, seed."""
    return [c for c in metrics.columns
            if c not in METRIC_KEYS and pd.api.types.is_numeric_dtype(metrics[c])]


def _dimension_order(retention: pd.DataFrame) -> list[str]:
    """Dimensions in first-appearance order, then "total"."""
    dims = retention.loc[retention["level"] == "dimension", "name"]
    return [*pd.unique(dims), TOTAL]


def _seed_draws(metrics: pd.DataFrame, retention: pd.DataFrame, key: tuple, used: list[str],
                names: list[str], dims: list[str], value: str, boot: Bootstrap
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """Resampled per-set means over seeds: metrics (resamples, sets, metrics) and retention
    (resamples, sets, dims); None when no set has two seeds (nothing to resample)."""
    model = key[0]
    m = metrics[metrics["model"] == model].set_index(["calib", "seed"])[names]
    r = retention[(retention[GROUP] == pd.Series(key, index=GROUP)).all(axis=1)
                  & retention["level"].isin(["dimension", TOTAL])]
    r = r.pivot_table(index=["calib", "seed"], columns="name", values=value, dropna=False)
    xs, ys, most = [], [], 0
    for calib in used:
        seeds = sorted(set(m.loc[calib].index) & set(r.loc[calib].index))
        if set(seeds) != set(m.loc[calib].index) or set(seeds) != set(r.loc[calib].index):
            log.warning("model %r, calibration set %r: metric seeds %s and retention seeds %s differ; "
                        "the interval of rho resamples only the seeds both have", model, calib,
                        sorted(m.loc[calib].index), sorted(r.loc[calib].index))
        if not seeds:
            return None
        most = max(most, len(seeds))
        pick = keyed_rng(boot.seed, "rho", *key, calib).integers(0, len(seeds), (boot.resamples, len(seeds)))
        xs.append(m.loc[calib].loc[seeds].to_numpy(float)[pick].mean(axis=1))
        ys.append(r.loc[calib].loc[seeds, dims].to_numpy(float)[pick].mean(axis=1))
    if most < 2:
        return None
    return np.stack(xs, axis=1), np.stack(ys, axis=1)


def correlation_table(metrics: pd.DataFrame, retention: pd.DataFrame,
                      calibs: list[str] | None = None, *, value: str = "retention",
                      boot: Bootstrap = Bootstrap(), settings: Collection[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Spearman rho between every OIT metric and every dimension's (and total) retention
    (docs/definitions.md#spearman-correlation).

    For each (model, method, target): each metric and each retention (column ``value``,
    "retention" or "chance_adjusted") is first averaged per calibration set over its seeds (the two
    averages are taken separately, each over the seeds it has); then rho and p come from
    :func:`calmix.core.stats.spearman` across calibration sets. ``calibs`` restricts the sets (e.g. to the
    single sources, leaving out mixes and self-generated sets); a listed calib absent from either
    table is a ValueError. With ``calibs=None`` every calib present in both tables is used.
    Pairs with NaN are dropped (``n`` counts the sets used); n < 3 or constant input gives NaN rho.
    ``settings`` (method, target as tables show it) restricts the correlations to the settings pruned
    with every set (a pruning.compare grid's settings hold only a few: calmix.pruning.plan).

    Columns: model, method, target, metric, dimension, rho, rho_low and rho_high (bootstrap over
    seeds; NaN when no set has two seeds), p, p_method ("exact", "t" or "none"; see
    :func:`calmix.core.stats.spearman`), q (Benjamini-Hochberg over the group's grid), n.
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
        if settings is not None and (key[1], str(key[2])) not in settings:
            continue
        block = block.droplevel(GROUP)
        have_metrics = (m_mean.loc[model].index if model in m_mean.index.get_level_values(0)
                        else pd.Index([]))
        if calibs is not None:
            for where, present in (("retention", block.index), ("metric", have_metrics)):
                absent = [c for c in calibs if c not in present]
                if absent:
                    raise ValueError(f"model {model!r}, method {key[1]!r}, target {key[2]}: "
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
        draws = _seed_draws(m, r, key, used, names, dims, value, boot) if len(used) >= 3 else None
        for i, name in enumerate(names):
            for j, dim in enumerate(dims):
                if used:
                    rho, p, n, how = spearman(x_all[name].to_numpy(float), y_all[dim].to_numpy(float))
                else:
                    rho, p, n, how = math.nan, math.nan, 0, "none"
                low = high = math.nan
                if draws is not None and np.isfinite(rho):
                    low, high = (float(v) for v in percentile_interval(
                        rowwise_spearman(draws[0][:, :, i], draws[1][:, :, j]), boot.confidence))
                rows.append({"model": key[0], "method": key[1], "target": key[2], "metric": name,
                             "dimension": dim, "rho": rho, "rho_low": low, "rho_high": high,
                             "p": p, "p_method": how, "n": n})
    out = pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
    out["q"] = np.nan
    for _, index in out.groupby(GROUP, sort=False, dropna=False).groups.items():
        out.loc[index, "q"] = benjamini_hochberg(out.loc[index, "p"].to_numpy(float))
    for col in ("rho", "rho_low", "rho_high", "p"):
        out[col] = out[col].astype(float)
    out["n"] = out["n"].astype(int)
    return out


def opposite_sign_pairs(corr: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Trade-offs: same metric, rho > 0 for one dimension and rho < 0 for another, both significant
    after correction (q < alpha).

    "total" is not a dimension here. One row per pair; columns model, method, target, metric,
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
