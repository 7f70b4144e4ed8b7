"""Across calibration sets: the mean over sets of a pruning setting, and differences between sets.

Why: the study's questions are comparative (which source keeps a capability best, and is it told
apart from the others? does a mix beat the best single source? IGSP beat Self-Cal?), and a
difference is only as trustworthy as its interval. The tables here are built resample by resample
from the two-stage draws of calmix.analysis.intervals, so shared evaluation items cancel in a
difference while each set's seed noise stays. Definitions: docs/definitions.md#main-block,
docs/definitions.md#interval-over-calibration-sets, docs/definitions.md#difference-interval,
docs/definitions.md#pairs-of-single-sources, docs/definitions.md#best-single-source and
docs/definitions.md#comparisons.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from calmix.analysis.retention import GROUP, TOTAL, VALUES
from calmix.core.stats import percentile_interval

if TYPE_CHECKING:
    from calmix.analysis.intervals import SeedDraws

SETTING_COLUMNS = [
    *GROUP, "level", "name", "dimension", "sets",
    "retention", "retention_low", "retention_high",
    "chance_adjusted", "chance_adjusted_low", "chance_adjusted_high",
]
COMPARISON_COLUMNS = [
    *GROUP, "comparison", "calib", "versus", "level", "name", "dimension", "seeds", "versus_seeds",
    "difference", "difference_low", "difference_high",
    "chance_adjusted_difference", "chance_adjusted_difference_low", "chance_adjusted_difference_high",
]

#: How a comparison against the best single source is labelled: "<built set> vs best single source".
BEST_SINGLE = "best single source"

#: Given one setting's over-seeds rows, the (calib, versus, label) pairs to compare.
Comparisons = Callable[[pd.DataFrame], list[tuple[str, str, str]]]

SEPARATION_COLUMNS = [*GROUP, "name", "pairs", "separated", "share"]


def in_main_block(group: pd.DataFrame, sources: Sequence[str],
                  swept: Collection[tuple[str, str]] | None = None) -> bool:
    """Whether one setting's rows belong to the main block (docs/definitions.md#main-block): a
    setting of ``pruning:`` itself (``swept``: (method, target as tables show it); None: any)
    pruned with the study's single sources, not a pruning.compare grid's or a data-free one."""
    if swept is not None and (str(group["method"].iat[0]), str(group["target"].iat[0])) not in swept:
        return False
    return bool(group["calib"].isin(sources).any())


def main_settings(summary: pd.DataFrame, sources: Sequence[str],
                  swept: Collection[tuple[str, str]] | None = None) -> list[tuple]:
    """The (model, method, target) keys of the main block, in the table's order."""
    return [key for key, g in summary.groupby(GROUP, sort=False, dropna=False)
            if in_main_block(g, sources, swept)]


def source_pairs(sources: Sequence[str], swept: Collection[tuple[str, str]] | None = None) -> Comparisons:
    """Every pair of single sources of a main-block setting (docs/definitions.md#pairs-of-single-sources),
    the first of the two in ``sources``' order minus the second, labelled "<a> vs <b>"."""

    def pairs(group: pd.DataFrame) -> list[tuple[str, str, str]]:
        if not in_main_block(group, sources, swept):
            return []
        present = set(group["calib"])
        return [(a, b, f"{a} vs {b}") for a, b in itertools.combinations([s for s in sources if s in present], 2)]

    return pairs


def separates(low: float, high: float) -> bool:
    """A difference interval that excludes 0 (and is defined) separates the two sets."""
    return bool(np.isfinite(low) and np.isfinite(high) and (low > 0 or high < 0))


def separated_pairs(pairs: pd.DataFrame, controls: Sequence[str] = ()) -> pd.DataFrame:
    """Per setting and dimension (and total): of the pairs of single sources with a defined difference
    interval (``pairs``), neither of them a control (config report.controls), how many separate, and
    their share (SEPARATION_COLUMNS)."""
    shown = pairs[pairs["level"].isin(["dimension", TOTAL]) & ~pairs["calib"].isin(controls)
                  & ~pairs["versus"].isin(controls)]
    rows = []
    for key, g in shown.groupby([*GROUP, "name"], sort=False, dropna=False):
        apart = [separates(lo, hi) for lo, hi in zip(g["difference_low"], g["difference_high"])]
        defined = int((np.isfinite(g["difference_low"]) & np.isfinite(g["difference_high"])).sum())
        rows.append(dict(zip([*GROUP, "name"], key), pairs=defined, separated=sum(apart),
                         share=sum(apart) / defined if defined else np.nan))
    return pd.DataFrame(rows, columns=SEPARATION_COLUMNS)


def builder_comparisons(sources: Sequence[str], builders: dict[str, str], baseline: str | None) -> Comparisons:
    """The comparisons of built calibration sets the report makes in every setting
    (docs/definitions.md#comparisons): each built set against the best single source and against
    ``baseline``; each IGSP set against each Self-Cal and SGS set. ``builders``: built set -> kind."""

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


def compare(summary: pd.DataFrame, mixed: SeedDraws, comparisons: Comparisons, confidence: float) -> pd.DataFrame:
    """The comparisons table (COMPARISON_COLUMNS): per setting, each pair ``comparisons`` names, calib
    minus versus at every level both have, plain and chance-adjusted, with the percentile interval of
    the difference of their two-stage draws and the seeds each side rests on."""
    rows = []
    for key, group in summary.groupby(GROUP, sort=False, dropna=False):
        for calib, versus, label in comparisons(group):
            a = group[group["calib"] == calib].set_index(["level", "name"])
            b = group[group["calib"] == versus].set_index(["level", "name"])
            for (level, name), row in a.iterrows():
                if (level, name) not in b.index:
                    continue
                out = dict(zip(GROUP, key), comparison=label, calib=calib, versus=versus, level=level, name=name,
                           dimension=row["dimension"], seeds=row["seeds"], versus_seeds=b.at[(level, name), "seeds"])
                for value, column in (("retention", "difference"), ("chance_adjusted", "chance_adjusted_difference")):
                    diff = mixed[value][(*key, calib, level, name)] - mixed[value][(*key, versus, level, name)]
                    low, high = percentile_interval(diff[None, :], confidence)
                    out.update({column: row[value] - b.at[(level, name), value],
                                f"{column}_low": low[0], f"{column}_high": high[0]})
                rows.append(out)
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    table[["seeds", "versus_seeds"]] = table[["seeds", "versus_seeds"]].astype(int)
    return table


def summarise_sets(summary: pd.DataFrame, mixed: SeedDraws, confidence: float) -> pd.DataFrame:
    """The over-sets table (SETTING_COLUMNS): per setting and level, the mean over calibration sets of
    their means over seeds, with the interval of the mean of their two-stage draws."""
    rows = []
    for key, g in summary.groupby([*GROUP, "level", "name"], sort=False, dropna=False):
        row = dict(zip([*GROUP, "level", "name"], key), dimension=g["dimension"].iat[0], sets=len(g))
        setting, rest = key[:len(GROUP)], key[len(GROUP):]
        for value in VALUES:
            stacked = np.stack([mixed[value][(*setting, calib, *rest)] for calib in g["calib"]])
            low, high = percentile_interval(stacked.mean(axis=0)[None, :], confidence)
            row.update({value: g[value].mean(skipna=False), f"{value}_low": low[0], f"{value}_high": high[0]})
        rows.append(row)
    out = pd.DataFrame(rows, columns=SETTING_COLUMNS)
    out["sets"] = out["sets"].astype(int)
    return out
