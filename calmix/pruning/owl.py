"""OWL, outlier-weighted layerwise sparsity (Yin et al., ICML 2024): layers with more outlier weights
keep more of them. docs/definitions.md#owl, docs/reference.md, "OWL".

Per pruned decoder layer l, the outlier ratio D_l is the share of the layer's scores above ``owl_m``
times their mean, pooled over its pruned linears; the scores are Wanda's |W_ij| * ||X_j|| on the dense
model (the method's own data), or |W_ij| for a data-free method. As in the reference (and
llm-compressor's ``sparsity_profile="owl"`` with ``owl_m`` and ``owl_lmbda``), the ratios are min-max
scaled onto [0, 2 lmbda] and shifted so that the layer densities' mean is 1 - S: layer sparsities span
exactly 2 lmbda, lower where D_l is higher, with mean S -- but not centred on S, so one layer can sit
up to 2 lmbda (L - 1) / L from it (registry.owl_extremes). Layers whose linears ``skip`` all leaves
dense take no part in the ratios or the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatch
from typing import Any

import numpy as np
import torch
from torch import nn

from calmix.pruning.capture import Batch, collect, in_features, linears_of, run_layer, weight_out_in
from calmix.pruning.registry import owl_problem
from calmix.pruning.statistics import SqNorms


def outlier_ratio(scores: Sequence[torch.Tensor], m: float) -> float:
    """Share of the pooled scores of one decoder layer's linears above m x their mean."""
    flat = torch.cat([s.detach().reshape(-1).to(torch.float64) for s in scores])
    return float((flat > m * flat.mean()).sum()) / flat.numel()


def check_lmbda(target: float, lmbda: float, layers: int) -> None:
    """Refuse an owl_lmbda that could put a layer's sparsity outside (0, 1) for ``layers`` pruned layers
    (whatever the ratios turn out to be), before any work."""
    if not lmbda > 0:
        raise ValueError(f"config key 'pruning.owl_lmbda': must be > 0, got {lmbda:g}")
    problem = owl_problem(target, lmbda, layers)
    if problem:
        raise ValueError(problem)


def layer_sparsities(ratios: Sequence[float], target: float, lmbda: float) -> list[float]:
    """Per pruned layer, target - 2 lmbda (n_l - mean(n)) with n_l the ratio min-max scaled to [0, 1]:
    a span of exactly 2 lmbda with mean target (up to rounding), within registry.owl_extremes;
    uniform when every layer has the same outlier ratio."""
    check_lmbda(target, lmbda, len(ratios))
    r = np.asarray(ratios, dtype=np.float64)
    if r.size == 0 or r.max() == r.min():
        return [float(target)] * r.size
    density = (r - r.min()) / (r.max() - r.min()) * 2 * lmbda
    density += (1 - target) - density.mean()
    return [float(1 - d) for d in density]


def pruned_linears(layer: nn.Module, name: str, skip: Sequence[str]) -> list[nn.Module]:
    """The linears of decoder layer ``name`` that ``skip`` leaves to prune."""
    return [lin for n, lin in linears_of(layer).items() if not any(fnmatch(f"{name}.{n}", p) for p in skip)]


def profile(
    layers: nn.ModuleList, path: str, batches: list[Batch], device: torch.device, sparsity: float, *,
    owl_m: float, owl_lmbda: float, skip: Sequence[str] = (),
) -> tuple[list[float | None], dict[str, Any]]:
    """(per-layer sparsities, report fields) from one pass of the batches through the dense layers,
    which leaves the batches at the last layer's output (the driver captures them again). Without
    batches (a data-free method) the scores are the weights' magnitudes. Linears left dense by
    ``skip`` have no part in the ratios; a layer left wholly dense has none, and None as its sparsity.
    owl_lmbda is checked against the number of pruned layers before the pass."""
    todo = [pruned_linears(layer, f"{path}.{index}", skip) for index, layer in enumerate(layers)]
    check_lmbda(sparsity, owl_lmbda, sum(1 for linears in todo if linears))
    ratios: list[float | None] = []
    for index, (layer, linears) in enumerate(zip(layers, todo)):
        home = next(layer.parameters()).device
        layer.to(device)
        try:
            name = f"{path}.{index}"
            norms = {lin: SqNorms(in_features(lin), device) for lin in linears}
            if batches:
                if linears:
                    collect(layer, batches, norms, index, name)
                for batch in batches:
                    batch.hidden.copy_(run_layer(layer, batch, index, name))
            scores = [
                weight_out_in(lin).abs().float() * (norms[lin].result().sqrt() if batches else 1.0) for lin in linears
            ]
            ratios.append(outlier_ratio(scores, owl_m) if linears else None)
        finally:
            layer.to(home)
    spread = iter(layer_sparsities([r for r in ratios if r is not None], sparsity, owl_lmbda))
    targets = [None if r is None else next(spread) for r in ratios]
    return targets, {"outlier_ratios": ratios, "layer_sparsities": targets}
