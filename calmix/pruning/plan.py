"""Which checkpoints a study prunes: every setting of ``pruning:`` with every calibration set and seed,
plus the optional ``pruning.compare`` grids, each with only a few sets.

Why a second grid: the study's question (which data keeps which capability) needs every calibration
set at one or two settings, while the methods' question (SparseGPT against Wanda, OWL, 2:4, 60%)
needs every setting on one or two sets. Their product is what a study cannot afford on a real model
(16 sets x 2 seeds x 10 settings = 320 prunes). Pure Python: the workflow reads it while it parses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from calmix.pruning import registry, targets

#: The keys that span a grid of settings; a ``pruning.compare`` grid may set each, else it takes the main block's.
GRID_KEYS = ("methods", "profiles", "sparsities", "structures")
DATA_FREE_CALIB = "none"


@dataclass(frozen=True)
class Checkpoint:
    """One pruned checkpoint: results/pruned/<model>/<method>/<target>/<calib>/seed<seed>."""

    method: str  # label: 'wanda', 'wanda-owl'
    target: str  # path label: '0.6', '2of4'
    calib: str  # 'none' for a data-free method
    seed: int


def compare_grids(pruning: dict[str, Any]) -> list[dict[str, Any]]:
    """Each comparison grid as a whole pruning block: the main block's values where it sets none."""
    main = {k: v for k, v in pruning.items() if k != "compare"}
    return [{**main, **{k: grid[k] for k in GRID_KEYS if k in grid}} for grid in pruning.get("compare", [])]


def settings(block: dict[str, Any]) -> list[tuple[str, str]]:
    """(method label, target path label) of a block: every method with every profile and target; a
    non-uniform profile spreads unstructured targets only."""
    labels = targets.path_labels(block["sparsities"], block["structures"])
    out = []
    for method in block["methods"]:
        for profile in block["profiles"]:
            spread = registry.PROFILES[profile].module is not None
            out += [(registry.label(method, profile), t) for t in labels if not (spread and targets.is_n_m(t))]
    return out


def checkpoints(pruning: dict[str, Any], calibs: Sequence[str], seeds: Sequence[int], baseline: str) -> list[Checkpoint]:
    """Every checkpoint a study prunes, in a stable order, each once: the main block's settings with
    every calibration set and seed, then each compare grid's with its ``calibrations`` (default: the
    baseline source) and ``seeds`` (default: every seed). A data-free method is pruned once per
    target, with calibration set 'none'."""
    blocks = [(pruning, list(calibs), list(seeds))]
    for grid, block in zip(pruning.get("compare", []), compare_grids(pruning)):
        blocks.append((block, grid.get("calibrations") or [baseline], grid.get("seeds") or list(seeds)))
    planned: dict[Checkpoint, None] = {}
    for block, sets, draws in blocks:
        for method, target in settings(block):
            if registry.parse_label(method)[0].data_free:
                pairs = [(DATA_FREE_CALIB, 0)]
            else:
                pairs = [(calib, seed) for calib in sets for seed in draws]
            planned.update({Checkpoint(method, target, calib, seed): None for calib, seed in pairs})
    return list(planned)


def keeps_checkpoints(pruning: dict[str, Any], models: dict[str, dict[str, Any]]) -> bool:
    """Whether pruned checkpoints stay once evaluated (``pruning.keep_checkpoints``). ``auto`` keeps
    them only for the built-in world, whose checkpoints are a few MB each; a real model's are its full
    size (16 GB for 8B in bf16), so they are temporary: removed once every evaluation of one is done,
    pruned again if a rerun needs it, their prune report (with the weights' sha256) kept."""
    keep = pruning.get("keep_checkpoints", "auto")
    if keep == "auto":
        return all(spec["kind"] == "world" for spec in models.values())
    return bool(keep)
