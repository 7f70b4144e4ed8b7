"""Magnitude pruning, the data-free baseline: the smallest |w| of each matrix go."""

from __future__ import annotations

from typing import Any

import torch

from calmix.pruning.masks import check_args, check_weight, lowest_mask


def magnitude_prune(weight: torch.Tensor, sparsity: float, prunen: int = 0, prunem: int = 0) -> torch.Tensor:
    """Data-free baseline: zero the ``int(numel * sparsity)`` smallest |w| of the whole matrix, or
    per row the N smallest in every aligned group of M inputs (``sparsity`` then ignored)."""
    _, columns = check_weight(weight)
    check_args(sparsity, prunen, prunem, columns)
    mask = lowest_mask(weight.detach().abs().float(), sparsity, prunen, prunem, per_row=False)
    return weight.detach().masked_fill(mask, 0)



def prune(
    weight: torch.Tensor, _statistic: None, *, sparsity: float, prunen: int = 0, prunem: int = 0, **_: Any,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The driver's call: (pruned weight, no report fields)."""
    return magnitude_prune(weight, sparsity, prunen, prunem), {}
