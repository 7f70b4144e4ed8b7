"""The report's figures, drawn only from the tables (results/tables/), so anyone can redraw them.

Why from the tables alone: a figure then never disagrees with the numbers beside it, and redrawing
needs no evaluation. Every figure is one PNG written atomically, without metadata that varies
between runs, so equal tables give identical bytes. Intervals are the tables' own
(docs/definitions.md#intervals): retention from the two-stage bootstrap over seeds and items
(calmix.analysis.intervals), differences from calmix.analysis.comparisons, rho from the bootstrap
over seeds (calmix.analysis.correlation). Panels and files are one per pruning setting (model,
method, target), named by :func:`group_title` and :func:`group_slug`; the methods' grid and data-free
settings share one figure (:func:`plot_methods`), and a figure of many panels wraps into columns
(at most MAX_HEIGHT inches tall). Every interval names the seeds it rests on, and a dimension whose
mean includes perplexity retention carries PERPLEXITY_MARK (docs/definitions.md#perplexity-in-a-mean).
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from calmix.analysis.correlation import ALPHA
from calmix.analysis.retention import GROUP, TOTAL
from calmix.core.io import atomic_path

#: The tallest figure drawn, in inches: more panels wrap into columns.
MAX_HEIGHT = 16.0
#: Marks a dimension (and the total) whose mean includes a perplexity task's retention.
PERPLEXITY_MARK = "†"


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


def perplexity_dimensions(retention: pd.DataFrame) -> set[str]:
    """Dimensions with a perplexity task (metric such as word_perplexity), whose retention is dense /
    pruned perplexity rather than an accuracy ratio; read from the per-checkpoint table's task rows."""
    tasks = retention[retention["level"] == "task"]
    perplexity = tasks["metric"].astype(str).str.partition(",")[0].str.contains("perplexity")
    return set(tasks.loc[perplexity, "dimension"].astype(str))


def marked(name: str, perplexity: Collection[str]) -> str:
    """A dimension's (or the total's) label, with PERPLEXITY_MARK where its mean includes perplexity."""
    mixed = name in perplexity or (name == TOTAL and bool(perplexity))
    return name + PERPLEXITY_MARK if mixed else name


def seeds_text(counts: Iterable[int]) -> str:
    """How many seeds intervals rest on: '1 seed', '2 seeds', '2-3 seeds'."""
    values = sorted({int(c) for c in counts})
    if not values:
        return "no seeds"
    return (f"{values[0]}" if len(values) == 1 else f"{values[0]}-{values[-1]}") + (
        " seed" if values == [1] else " seeds")


def setting_seeds(summary: pd.DataFrame) -> dict[tuple, str]:
    """Per (model, method, target): the seeds its sets' total retentions rest on, as seeds_text."""
    totals = summary[summary["level"] == TOTAL]
    return {key: seeds_text(g["seeds"]) for key, g in totals.groupby(GROUP, sort=False, dropna=False)}


def in_settings(table: pd.DataFrame, keys: Collection[tuple]) -> np.ndarray:
    """Which rows of ``table`` have a (model, method, target) among ``keys``."""
    wanted = set(keys)
    return np.array([key in wanted for key in table[GROUP].itertuples(index=False, name=None)], dtype=bool)


def only_settings(table: pd.DataFrame, keys: Collection[tuple]) -> pd.DataFrame:
    """The rows of ``table`` whose (model, method, target) is one of ``keys``."""
    return table[in_settings(table, keys)]


def panel_grid(n: int, height: float) -> tuple[int, int]:
    """(rows, columns) of n panels ``height`` inches tall each, wrapped into columns so the figure
    stays within MAX_HEIGHT (a taller panel stands alone)."""
    columns = math.ceil(n / max(1, int(MAX_HEIGHT // height)))
    return math.ceil(n / columns), columns


def _panels(n: int, width: float, height: float) -> tuple[Figure, list]:
    """A figure of n panels, each width x height inches, wrapped by panel_grid; unused cells hidden."""
    rows, columns = panel_grid(n, height)
    fig = _new_figure(width * columns, height * rows)
    axes = list(fig.subplots(rows, columns, squeeze=False).ravel(order="F"))
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


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


def _note_figure(text: str, path: str | os.PathLike) -> Path:
    """A figure that says why there is nothing to draw, so a study without it still has the file."""
    fig = _new_figure(6.0, 1.6)
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10)
    return _save_png(fig, path)


def plot_rho_heatmap(corr: pd.DataFrame, path: str | os.PathLike, *, seeds: dict[tuple, str] | None = None,
                     why_none: str = "No correlations computed.") -> Path:
    """Spearman rho, metric (rows) x dimension (columns), one panel per (model, method, target);
    colour fixed to -1..1, '*' marks q < 0.05 (Benjamini-Hochberg), the bracket is the seed interval
    (``seeds``: setting -> the seeds it rests on, in the panel's title). A table without a defined
    rho draws ``why_none`` instead."""
    if not np.isfinite(corr["rho"].to_numpy(float)).any():
        return _note_figure(why_none, path)
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
        ax.set_title(group_title(key) + (f"\nintervals over {seeds[key]} per source" if seeds and key in seeds
                                         else ""), fontsize=9)
    fig.colorbar(image, ax=list(axes), label="Spearman rho (* q < 0.05, BH-corrected)", shrink=0.9)
    return _save_png(fig, path)


def plot_retention(summary: pd.DataFrame, path: str | os.PathLike, perplexity: Collection[str] = ()) -> Path:
    """Grouped bars of retention (%) per calibration set (x) and dimension (bars), plus total, mean over
    seeds with the two-stage interval as error bars; one panel per setting (the caller passes the main
    block's), sets sorted by total, the seeds in the panel's title. ``perplexity``: dimensions marked
    as including perplexity retention."""
    tables = set_tables(summary)
    if not tables:
        raise ValueError("retention summary has no dimension rows; nothing to plot")
    n_calib = max(len(t) for t in tables.values())
    seeds = setting_seeds(summary)
    fig, axes = _panels(len(tables), max(6.0, 1.5 + 0.9 * n_calib), 3.6)
    palette = colormaps["tab10"]
    for ax, (key, table) in zip(axes, tables.items()):
        cols = list(table["mean"].columns)
        width = 0.8 / len(cols)
        x = np.arange(len(table))
        for k, col in enumerate(cols):
            ax.bar(x + (k - (len(cols) - 1) / 2) * width, table[("mean", col)].to_numpy(float), width,
                   yerr=_yerr(table, col), error_kw={"elinewidth": 0.7, "capsize": 1.5},
                   label=marked(col, perplexity), color="0.25" if col == TOTAL else palette(k % 10))
        ax.set_xticks(x, table.index, rotation=35, ha="right")
        ax.set_ylabel("retention (%)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{group_title(key)} (intervals over {seeds[key]})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _save_png(fig, path)


def plot_profile(summary: pd.DataFrame, path: str | os.PathLike, perplexity: Collection[str] = ()) -> Path:
    """Capability profile: retention (%) per dimension (x) with one line per calibration set, so a set
    that keeps code but loses commonsense shows as a crossing line; intervals as error bars, their
    seeds in the panel's title; one panel per setting (the caller passes the main block's)."""
    tables = set_tables(summary)
    if not tables:
        raise ValueError("retention summary has no dimension rows; nothing to plot")
    seeds = setting_seeds(summary)
    fig, axes = _panels(len(tables), 8.5, 3.8)
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
        ax.set_xticks(x, [marked(d, perplexity) for d in dims])
        ax.set_ylabel("retention (%)")
        ax.set_title(f"{group_title(key)} (intervals over {seeds[key]})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False,
                  title=f"set (total{PERPLEXITY_MARK if perplexity else ''} %)", title_fontsize=7)
    return _save_png(fig, path)


def scatter_figure(key: tuple, corr: pd.DataFrame, metrics: pd.DataFrame, summary: pd.DataFrame,
                   sources: Collection[str]) -> Figure:
    """One setting's grid of metric (rows) vs retention of each dimension and total (columns): one
    point per single source (built sets are not in rho, so not drawn), the metric and the retention
    each its mean over seeds, with the retention's interval; panels titled with rho, its seed interval
    and q. ``corr``: the setting's correlation rows."""
    names, dims = list(pd.unique(corr["metric"])), list(pd.unique(corr["dimension"]))
    rows = only_settings(summary, [key])
    table = set_tables(rows)[key]
    x_all = (metrics[metrics["model"] == key[0]].groupby("calib", sort=False)[names]
             .mean(numeric_only=True))
    calibs = [c for c in table.index if c in sources and c in x_all.index]
    sub = table.loc[calibs]
    seeds = seeds_text(rows.loc[(rows["level"] == TOTAL) & rows["calib"].isin(calibs), "seeds"])
    cells = corr.set_index(["metric", "dimension"])
    fig = _new_figure(2.3 * len(dims) + 0.5, 2.1 * len(names) + 0.6)
    axes = fig.subplots(len(names), len(dims), squeeze=False)
    for i, name in enumerate(names):
        x = x_all.loc[calibs, name].to_numpy(float)
        for j, dim in enumerate(dims):
            ax, cell = axes[i, j], cells.loc[(name, dim)]
            ax.errorbar(x, sub[("mean", dim)].to_numpy(float), yerr=_yerr(sub, dim), fmt="o", markersize=3,
                        elinewidth=0.6, capsize=1.2, color="C0")
            rho = "n/a" if not np.isfinite(cell["rho"]) else f"{cell['rho']:+.2f}"
            ci = f" [{cell['rho_low']:+.2f}, {cell['rho_high']:+.2f}]" if np.isfinite(cell["rho_low"]) else ""
            q = f", q={cell['q']:.3f}" if np.isfinite(cell["q"]) else ""
            ax.set_title(f"rho {rho}{ci}{q}", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.set_xlabel(name, fontsize=6)
            if len(x) and np.nanmin(x) > 0 and np.nanmax(x) > 100 * np.nanmin(x):
                ax.set_xscale("log")  # rho is rank-based; a log axis keeps outliers readable
            if j == 0:
                ax.set_ylabel("retention (%)", fontsize=7)
            if i == 0:
                ax.annotate(dim, (0.5, 1.25), xycoords="axes fraction", ha="center",
                            fontsize=9, weight="bold")
    fig.suptitle(f"{group_title(key)}: {len(calibs)} single sources, intervals over {seeds}", fontsize=10)
    return fig


def plot_scatters(corr: pd.DataFrame, metrics: pd.DataFrame, summary: pd.DataFrame,
                  folder: str | os.PathLike, sources: Collection[str]) -> list[Path]:
    """One PNG per (model, method, target) with correlations (:func:`scatter_figure`, the single
    ``sources`` only). Returns the files written; none where the table is empty."""
    folder = Path(folder)
    written = []
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        for key, g in corr.groupby(GROUP, sort=False, dropna=False):
            target = tmp / f"{group_slug(key)}.png"
            _save_png(scatter_figure(key, g, metrics, summary, sources), target)
            written.append(folder / target.name)
    return written


def pair_seeds(seeds: int, versus_seeds: int) -> str:
    """The seeds a difference rests on: '2 seeds', or '3 vs 2 seeds' where the two sets differ."""
    return seeds_text([seeds]) if seeds == versus_seeds else f"{seeds} vs {versus_seeds} seeds"


def plot_comparisons(comparisons: pd.DataFrame, path: str | os.PathLike, paper: dict[str, float] | None = None,
                     perplexity: Collection[str] = ()) -> Path:
    """Horizontal bars: each comparison's difference in retention (points) per dimension and total,
    with its paired bootstrap interval and the seeds it rests on; one panel per (model, method,
    target). paper: comparison -> the paper's total difference (points), drawn as a hollow diamond on
    the total bar's row."""
    rows = comparisons[comparisons["level"].isin(["dimension", TOTAL])]
    if rows.empty:
        raise ValueError("comparisons table has no dimension rows; nothing to plot")
    groups = list(rows.groupby(GROUP, sort=False, dropna=False))
    n_rows = max(g["comparison"].nunique() for _, g in groups)
    fig, axes = _panels(len(groups), 8.5, 1.2 + 0.55 * n_rows)
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
            ax.barh(y + offset, diff, height, xerr=err, label=marked(name, perplexity),
                    color="0.25" if name == TOTAL else palette(k % 10), error_kw={"elinewidth": 0.7, "capsize": 1.5})
            with_paper = [i for i, label in enumerate(labels) if label in paper] if name == TOTAL and paper else []
            if with_paper:
                ax.plot([paper[labels[i]] for i in with_paper], y[with_paper] + offset, "D", markersize=6,
                        markerfacecolor="none", markeredgecolor="black", label="paper, total")
        first = g.drop_duplicates("comparison").set_index("comparison")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, [f"{label}\n({pair_seeds(first.at[label, 'seeds'], first.at[label, 'versus_seeds'])})"
                          for label in labels], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("difference in retention (points)")
        ax.set_title(group_title(key), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _save_png(fig, path)


def methods_rows(summary: pd.DataFrame, over_sets: pd.DataFrame, main: Collection[tuple],
                 baseline: str | None) -> pd.DataFrame:
    """The methods side by side (docs/definitions.md#methods-side-by-side), one tidy row per (row of
    the table, dimension or total): first each main-block setting's (``main``, in its order) mean over
    its sets and its run on ``baseline``, then every other setting (a pruning.compare grid's, a
    data-free one's) on each of its calibration sets. Columns: row (its number), setting (key), calib
    (the row's label), seeds (text), name, mean, low, high (percent)."""
    shown = summary[summary["level"].isin(["dimension", TOTAL])]
    over = over_sets[over_sets["level"].isin(["dimension", TOTAL])]
    groups = dict(list(shown.groupby(GROUP, sort=False, dropna=False)))
    lines = []
    for key in [*main, *(k for k in groups if k not in main)]:
        g = groups[key]
        if key in main:
            sets = only_settings(over, [key])
            n = int(sets["sets"].iat[0])
            lines.append((key, f"mean over {n} set{'s' if n > 1 else ''}", seeds_text(g["seeds"]), sets))
            g = g[g["calib"] == baseline]
        lines += [(key, str(calib), seeds_text(h["seeds"]), h) for calib, h in g.groupby("calib", sort=False)]
    rows = [(i, key, calib, seeds, r.name, r.retention, r.retention_low, r.retention_high)
            for i, (key, calib, seeds, h) in enumerate(lines) for r in h.itertuples()]
    out = pd.DataFrame(rows, columns=["row", "setting", "calib", "seeds", "name", "mean", "low", "high"])
    out[["mean", "low", "high"]] = out[["mean", "low", "high"]].astype(float) * 100.0
    return out


def plot_methods(rows: pd.DataFrame, path: str | os.PathLike, perplexity: Collection[str] = ()) -> Path:
    """One figure for the methods side by side (:func:`methods_rows`): a row per setting and set (y),
    retention (%) on x, a marker per dimension and a black diamond for the total, each with its
    interval; the seeds in the row's label."""
    if rows.empty:
        raise ValueError("no settings to draw")
    lines = rows.drop_duplicates("row")
    names = list(pd.unique(rows["name"]))
    height = min(0.45, (MAX_HEIGHT - 1.5) / len(lines))
    fig = _new_figure(11.0, 1.5 + height * len(lines))
    ax = fig.subplots()
    palette = colormaps["tab10"]
    y = np.arange(len(lines))
    for k, name in enumerate(names):
        part = rows[rows["name"] == name].set_index("row").reindex(lines["row"])
        mean = part["mean"].to_numpy(float)
        err = np.nan_to_num(np.stack([mean - part["low"].to_numpy(float), part["high"].to_numpy(float) - mean]),
                            nan=0.0).clip(min=0)
        offset = (k - (len(names) - 1) / 2) * 0.7 / len(names)
        ax.errorbar(mean, y + offset, xerr=err, fmt="D" if name == TOTAL else "o", markersize=4, elinewidth=0.7,
                    capsize=1.5, color="black" if name == TOTAL else palette(k % 10), label=marked(name, perplexity))
    ax.set_yticks(y, [f"{group_title(r.setting)} · {r.calib} ({r.seeds})" for r in lines.itertuples()], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("retention (%)")
    ax.set_title("Methods side by side", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _save_png(fig, path)
