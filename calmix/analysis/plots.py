"""The report's figures, drawn only from the tables (results/tables/), so anyone can redraw them.

Why from the tables alone: a figure then never disagrees with the numbers beside it, and redrawing
needs no evaluation. Every figure is one PNG written atomically, without metadata that varies
between runs, so equal tables give identical bytes. Intervals are the tables' own
(docs/definitions.md#intervals): retention from the two-stage bootstrap over seeds and items
(calmix.analysis.intervals), differences from calmix.analysis.comparisons, rho from the bootstrap
over seeds (calmix.analysis.correlation). Panels and files are one per pruning setting (model,
method, target), named by :func:`group_title` and :func:`group_slug`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from calmix.analysis.correlation import ALPHA
from calmix.analysis.retention import GROUP, TOTAL
from calmix.core.io import atomic_path


def _save_png(fig: Figure, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    return Path(path)


def _new_figure(width: float, height: float) -> Figure:
    """A Figure bound to the Agg canvas, independent of pyplot's global backend and state."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def target_title(target: str) -> str:
    """Readable form of a target label (docs/definitions.md#pruning-targets): '0.6' -> '60% unstructured',
    '2:4' -> '2:4 semi-structured'; any other label is shown as it is."""
    if ":" in target:
        return f"{target} semi-structured"
    try:
        return f"{100 * float(target):g}% unstructured"
    except ValueError:
        return target


def group_title(key: tuple) -> str:
    """Title of a (model, method, target) setting: 'world · wanda-owl · 2:4 semi-structured'."""
    model, method, target = key
    return f"{model} · {method} · {target_title(str(target))}"


def group_slug(key: tuple) -> str:
    """File-name form of a (model, method, target) setting, the target as in result paths:
    world_sparsegpt_0.6, world_wanda-owl_2of4."""
    model, method, target = key
    return f"{model}_{method}_{str(target).replace(':', 'of')}"


def set_tables(summary: pd.DataFrame, value: str = "retention") -> dict[tuple, pd.DataFrame]:
    """Per (model, method, target): calib x (dimensions..., total) of the mean over seeds with its
    interval, in percent, as three aligned frames under "mean", "low" and "high" (column level 0),
    sorted by total descending (ties by calib name)."""
    rows = summary[summary["level"].isin(["dimension", TOTAL])]
    dims = [*pd.unique(rows.loc[rows["level"] == "dimension", "name"]), TOTAL]
    out = {}
    for key, g in rows.groupby(GROUP, sort=False, dropna=False):
        parts = {part: g.pivot(index="calib", columns="name", values=col).reindex(
                     columns=[d for d in dims if d in set(g["name"])]) * 100.0
                 for part, col in (("mean", value), ("low", f"{value}_low"), ("high", f"{value}_high"))}
        table = pd.concat(parts, axis=1)
        table.index = table.index.astype(str)
        order = (table[("mean", TOTAL)].rename("t").reset_index()
                 .sort_values(["t", "calib"], ascending=[False, True], na_position="last")["calib"])
        out[key] = table.loc[list(order)]
    return out


def _yerr(table: pd.DataFrame, col: str) -> np.ndarray:
    """Asymmetric error bars from an interval; zero length where the interval is undefined."""
    mean, low, high = (table[(part, col)].to_numpy(float) for part in ("mean", "low", "high"))
    return np.nan_to_num(np.stack([mean - low, high - mean]), nan=0.0).clip(min=0)


def plot_rho_heatmap(corr: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Spearman rho, metric (rows) x dimension (columns), one panel per (model, method, target);
    colour fixed to -1..1, '*' marks q < 0.05 (Benjamini-Hochberg), the bracket is the seed interval."""
    if corr.empty:
        raise ValueError("correlation table is empty; nothing to plot")
    metrics = list(pd.unique(corr["metric"]))
    dims = list(pd.unique(corr["dimension"]))
    groups = list(corr.groupby(GROUP, sort=False, dropna=False))
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.85")
    fig = _new_figure(1.6 + 1.45 * len(dims) * len(groups) + 1.0, 1.2 + 0.55 * len(metrics))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    image = None
    for ax, (key, g) in zip(axes, groups):
        g = g.set_index(["metric", "dimension"])
        grid = {col: g[col].unstack("dimension").reindex(index=metrics, columns=dims)
                for col in ("rho", "q", "rho_low", "rho_high")}
        image = ax.imshow(np.ma.masked_invalid(grid["rho"].to_numpy(float)), cmap=cmap, vmin=-1, vmax=1,
                          aspect="auto")
        for i in range(len(metrics)):
            for j in range(len(dims)):
                r, q = grid["rho"].iat[i, j], grid["q"].iat[i, j]
                lo, hi = grid["rho_low"].iat[i, j], grid["rho_high"].iat[i, j]
                text = "n/a" if not np.isfinite(r) else f"{r:+.2f}" + ("*" if q < ALPHA else "")
                if np.isfinite(lo):
                    text += f"\n[{lo:+.2f}, {hi:+.2f}]"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if np.isfinite(r) and abs(r) > 0.6 else "black")
        ax.set_xticks(range(len(dims)), dims, rotation=30, ha="right")
        ax.set_yticks(range(len(metrics)), metrics)
        ax.set_title(group_title(key), fontsize=9)
    fig.colorbar(image, ax=list(axes), label="Spearman rho (* q < 0.05, BH-corrected)", shrink=0.9)
    return _save_png(fig, path)


def plot_retention(summary: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Grouped bars of retention (%) per calibration set (x) and dimension (bars), plus total, mean over
    seeds with the two-stage interval as error bars; one panel per group, sets sorted by total."""
    tables = set_tables(summary)
    if not tables:
        raise ValueError("retention summary has no dimension rows; nothing to plot")
    n_calib = max(len(t) for t in tables.values())
    fig = _new_figure(max(6.0, 1.5 + 0.9 * n_calib), 3.6 * len(tables))
    axes = fig.subplots(len(tables), 1, squeeze=False)[:, 0]
    palette = colormaps["tab10"]
    for ax, (key, table) in zip(axes, tables.items()):
        cols = list(table["mean"].columns)
        width = 0.8 / len(cols)
        x = np.arange(len(table))
        for k, col in enumerate(cols):
            ax.bar(x + (k - (len(cols) - 1) / 2) * width, table[("mean", col)].to_numpy(float), width,
                   yerr=_yerr(table, col), error_kw={"elinewidth": 0.7, "capsize": 1.5},
                   label=col, color="0.25" if col == TOTAL else palette(k % 10))
        ax.set_xticks(x, table.index, rotation=35, ha="right")
        ax.set_ylabel("retention (%)")
        ax.set_ylim(bottom=0)
        ax.set_title(group_title(key), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _save_png(fig, path)


def plot_profile(summary: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Capability profile: retention (%) per dimension (x) with one line per calibration set, so a set
    that keeps code but loses commonsense shows as a crossing line; intervals as error bars."""
    tables = set_tables(summary)
    if not tables:
        raise ValueError("retention summary has no dimension rows; nothing to plot")
    fig = _new_figure(8.5, 3.8 * len(tables))
    axes = fig.subplots(len(tables), 1, squeeze=False)[:, 0]
    palette = colormaps["tab20"]
    for ax, (key, table) in zip(axes, tables.items()):
        dims = [c for c in table["mean"].columns if c != TOTAL]
        x = np.arange(len(dims))
        shift = np.linspace(-0.15, 0.15, len(table)) if len(table) > 1 else np.zeros(1)
        for k, calib in enumerate(table.index):
            row = table.loc[[calib]]
            mean = row["mean"][dims].to_numpy(float)[0]
            err = np.concatenate([_yerr(row, d) for d in dims], axis=1)
            ax.errorbar(x + shift[k], mean, yerr=err, marker="o", markersize=3.5, linewidth=1.1,
                        elinewidth=0.7, capsize=1.5, color=palette(k % 20),
                        label=f"{calib} ({row[('mean', TOTAL)].iat[0]:.1f})")
        ax.set_xticks(x, dims)
        ax.set_ylabel("retention (%)")
        ax.set_title(group_title(key), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False,
                  title="set (total %)", title_fontsize=7)
    return _save_png(fig, path)


def plot_scatters(corr: pd.DataFrame, metrics: pd.DataFrame, summary: pd.DataFrame,
                  folder: str | os.PathLike) -> list[Path]:
    """One PNG per (model, method, target) with correlations: a grid of metric (rows) vs retention
    of each dimension and total (columns), one point per calibration set (mean over seeds, with its
    retention interval), titled with rho, its seed interval and q. Returns the files written."""
    folder = Path(folder)
    written = []
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        for key, g in corr.groupby(GROUP, sort=False, dropna=False):
            names, dims = list(pd.unique(g["metric"])), list(pd.unique(g["dimension"]))
            table = set_tables(summary[(summary[GROUP] == pd.Series(key, index=GROUP)).all(axis=1)])[key]
            x_all = (metrics[metrics["model"] == key[0]].groupby("calib", sort=False)[names]
                     .mean(numeric_only=True))
            calibs = [c for c in table.index if c in x_all.index]
            cells = g.set_index(["metric", "dimension"])
            fig = _new_figure(2.3 * len(dims) + 0.5, 2.1 * len(names) + 0.6)
            axes = fig.subplots(len(names), len(dims), squeeze=False)
            for i, name in enumerate(names):
                for j, dim in enumerate(dims):
                    ax, cell = axes[i, j], cells.loc[(name, dim)]
                    sub = table.loc[calibs]
                    ax.errorbar(x_all.loc[calibs, name].to_numpy(float), sub[("mean", dim)].to_numpy(float),
                                yerr=_yerr(sub, dim), fmt="o", markersize=3, elinewidth=0.6, capsize=1.2,
                                color="C0")
                    rho = "n/a" if not np.isfinite(cell["rho"]) else f"{cell['rho']:+.2f}"
                    ci = f" [{cell['rho_low']:+.2f}, {cell['rho_high']:+.2f}]" if np.isfinite(cell["rho_low"]) else ""
                    q = f", q={cell['q']:.3f}" if np.isfinite(cell["q"]) else ""
                    ax.set_title(f"rho {rho}{ci}{q}", fontsize=7)
                    ax.tick_params(labelsize=6)
                    ax.set_xlabel(name, fontsize=6)
                    x = x_all.loc[calibs, name].to_numpy(float)
                    if np.nanmin(x) > 0 and np.nanmax(x) > 100 * np.nanmin(x):
                        ax.set_xscale("log")  # rho is rank-based; a log axis keeps outliers readable
                    if j == 0:
                        ax.set_ylabel("retention (%)", fontsize=7)
                    if i == 0:
                        ax.annotate(dim, (0.5, 1.25), xycoords="axes fraction", ha="center",
                                    fontsize=9, weight="bold")
            fig.suptitle(group_title(key), fontsize=10)
            target = tmp / f"{group_slug(key)}.png"
            _save_png(fig, target)
            written.append(folder / target.name)
    return written


def plot_comparisons(comparisons: pd.DataFrame, path: str | os.PathLike, paper: dict[str, float] | None = None
                     ) -> Path:
    """Horizontal bars: each comparison's difference in retention (points) per dimension and total,
    with its paired bootstrap interval; one panel per (model, method, target). paper: comparison ->
    the paper's total difference (points), drawn as a hollow diamond on the total bar's row."""
    rows = comparisons[comparisons["level"].isin(["dimension", TOTAL])]
    if rows.empty:
        raise ValueError("comparisons table has no dimension rows; nothing to plot")
    groups = list(rows.groupby(GROUP, sort=False, dropna=False))
    n_rows = max(g["comparison"].nunique() for _, g in groups)
    fig = _new_figure(8.5, (1.2 + 0.55 * n_rows) * len(groups))
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    palette = colormaps["tab10"]
    for ax, (key, g) in zip(axes, groups):
        labels = list(pd.unique(g["comparison"]))
        names = list(pd.unique(g["name"]))
        height = 0.8 / len(names)
        y = np.arange(len(labels))
        for k, name in enumerate(names):
            part = g[g["name"] == name].set_index("comparison").reindex(labels)
            diff = 100 * part["difference"].to_numpy(float)
            err = 100 * np.nan_to_num(np.stack([part["difference"] - part["difference_low"],
                                                part["difference_high"] - part["difference"]]), nan=0.0).clip(min=0)
            offset = (k - (len(names) - 1) / 2) * height
            ax.barh(y + offset, diff, height, xerr=err, label=name,
                    color="0.25" if name == TOTAL else palette(k % 10), error_kw={"elinewidth": 0.7, "capsize": 1.5})
            marked = [i for i, label in enumerate(labels) if label in paper] if name == TOTAL and paper else []
            if marked:
                ax.plot([paper[labels[i]] for i in marked], y[marked] + offset, "D", markersize=6,
                        markerfacecolor="none", markeredgecolor="black", label="paper, total")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("difference in retention (points)")
        ax.set_title(group_title(key), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _save_png(fig, path)
