"""OWL, outlier-weighted layerwise sparsity (Yin et al., ICML 2024): layers with more outlier weights
keep more of them. docs/definitions.md#owl, docs/reference.md, "OWL".

Per decoder layer l, the outlier ratio D_l is the share of the layer's scores above ``owl_m`` times
their mean, pooled over all its linears; the scores are Wanda's |W_ij| * ||X_j|| on the dense model
(the method's own data), or |W_ij| for a data-free method. Layer sparsities are the ratios mapped
linearly onto [S - lmbda, S + lmbda], lower where D_l is higher, then shifted so that their mean is
the target S (llm-compressor's ``sparsity_profile="owl"`` with ``owl_m`` and ``owl_lmbda``).
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatch
from typing import Any

import numpy as np
import torch
from torch import nn

from calmix.pruning.capture import Batch, collect, linears_of, run_layer
from calmix.pruning.statistics import SqNorms


def outlier_ratio(scores: Sequence[torch.Tensor], m: float) -> float:
    """Share of the pooled scores of one decoder layer's linears above m x their mean."""
    flat = torch.cat([s.detach().reshape(-1).to(torch.float64) for s in scores])
    return float((flat > m * flat.mean()).sum()) / flat.numel()


def layer_sparsities(ratios: Sequence[float], target: float, lmbda: float) -> list[float]:
    """Per layer sparsity in [target - lmbda, target + lmbda] with mean target (up to rounding);
    uniform when every layer has the same outlier ratio."""
    if not 0 < lmbda < min(target, 1 - target):
        raise ValueError(f"owl_lmbda must be in (0, {min(target, 1 - target):g}) for target {target:g}, got {lmbda:g}")
    r = np.asarray(ratios, dtype=np.float64)
    if r.size == 0 or r.max() == r.min():
        return [float(target)] * r.size
    density = (r - r.min()) / (r.max() - r.min()) * 2 * lmbda
    density += (1 - target) - density.mean()
    return [float(1 - d) for d in density]


def profile(
    layers: nn.ModuleList, path: str, batches: list[Batch], device: torch.device, sparsity: float, *,
    owl_m: float, owl_lmbda: float, skip: Sequence[str] = (),
) -> tuple[list[float], dict[str, Any]]:
    """(per-layer sparsities, report fields) from one pass of the batches through the dense layers,
    which leaves the batches at the last layer's output (the driver captures them again). Without
    batches (a data-free method) the scores are the weights' magnitudes. Linears left dense by
    ``skip`` have no part in the ratios."""
    ratios = []
    for index, layer in enumerate(layers):
        home = next(layer.parameters()).device
        layer.to(device)
        try:
            name = f"{path}.{index}"
            linears = [lin for n, lin in linears_of(layer).items() if not any(fnmatch(f"{name}.{n}", p) for p in skip)]
            norms = {lin: SqNorms(lin.in_features, device) for lin in linears}
            if batches:
                collect(layer, batches, norms, index, name)
                for batch in batches:
                    batch.hidden.copy_(run_layer(layer, batch, index, name))
            scores = [
                lin.weight.detach().abs().float() * (norms[lin].result().sqrt() if batches else 1.0) for lin in linears
            ]
            ratios.append(outlier_ratio(scores, owl_m))
        finally:
            layer.to(home)
    targets = layer_sparsities(ratios, sparsity, owl_lmbda)
    return targets, {"outlier_ratios": ratios, "layer_sparsities": targets}
