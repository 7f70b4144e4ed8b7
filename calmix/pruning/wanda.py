"""Wanda (Sun et al., 2024) on one weight matrix: score |W_ij| * ||X_j||, no weight update.

Prunes exactly ``floor(in * sparsity)`` per row with deterministic ties (the reference's ``<=``
threshold prunes extra entries on ties); the cumulative variant never prunes a whole row by accident
(the reference gathers index -1 when no entry is below the threshold). docs/reference.md, "Wanda".
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from calmix.pruning.masks import PruningError, check_args, check_weight, lowest_mask

log = logging.getLogger(__name__)

#: Cumulative Wanda: the achieved sparsity is within this of the target (the Wanda reference's
#: tolerance), else a warning is logged. For real-valued scores it is in fact within one entry; only
#: many tied rows, or more zero scores than the target, can make the steps in alpha coarser.
CUMULATIVE_TOLERANCE = 1e-3



def _cumulative_mask(scores: torch.Tensor, sparsity: float) -> tuple[torch.Tensor, float]:
    """Wanda's cumulative variant: per row, prune the ascending-sorted prefix whose cumulative score
    is <= alpha * row sum, with one alpha for the matrix chosen by bisection so that the matrix
    sparsity is as close to the target as the steps of the count allow (see CUMULATIVE_TOLERANCE)."""
    columns = scores.shape[1]
    ordered, order = torch.sort(scores, dim=1, stable=True)
    cumsum = torch.cumsum(ordered.double(), dim=1)
    row_sum = cumsum[:, -1:]  # exactly the last cumulative value, so alpha = 1 prunes every entry

    def pruned(alpha: float) -> torch.Tensor:  # per row: how many sorted entries are pruned
        return torch.searchsorted(cumsum, alpha * row_sum, right=True)

    target = int(scores.numel() * sparsity)
    # Invariant count(lo) < target <= count(hi); if zero scores alone reach the target, alpha = 0.
    lo, hi = 0.0, (1.0 if int(pruned(0.0).sum()) < target else 0.0)
    for _ in range(60 if hi > lo else 0):  # count steps in alpha; 60 halvings exhaust double precision
        mid = (lo + hi) / 2
        if int(pruned(mid).sum()) >= target:
            hi = mid
        else:
            lo = mid
    alpha = min((hi, lo), key=lambda a: abs(int(pruned(a).sum()) - target))
    counts = pruned(alpha)
    achieved = int(counts.sum()) / scores.numel()
    if abs(achieved - sparsity) > CUMULATIVE_TOLERANCE:
        log.warning("cumulative Wanda reached sparsity %.5f for target %.5f (alpha %.6g)", achieved, sparsity, alpha)
    prune_sorted = torch.arange(columns, device=scores.device).unsqueeze(0) < counts
    mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order, prune_sorted)
    return mask, alpha


def _wanda(
    weight: torch.Tensor,
    input_sq_norms: torch.Tensor,
    sparsity: float,
    prunen: int = 0,
    prunem: int = 0,
    cumulative: bool = False,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Wanda; returns (pruned weight, report fields: alpha for the cumulative variant)."""
    _, columns = check_weight(weight)
    if input_sq_norms.shape != (columns,):
        raise ValueError(f"input_sq_norms must have shape ({columns},), got {tuple(input_sq_norms.shape)}")
    check_args(sparsity, prunen, prunem, columns)
    if cumulative and prunem:
        raise ValueError("the cumulative Wanda variant is unstructured; it cannot be combined with N:M")
    norms = input_sq_norms.detach().to(device=weight.device, dtype=torch.float32)
    if not torch.isfinite(norms).all() or (norms < 0).any():
        raise PruningError("input norms contain NaN, Inf or negative values (non-finite calibration activations)")
    scores = weight.detach().abs().float() * norms.sqrt()
    if cumulative:
        mask, alpha = _cumulative_mask(scores, sparsity)
        return weight.detach().masked_fill(mask, 0), {"alpha": alpha}
    return weight.detach().masked_fill(lowest_mask(scores, sparsity, prunen, prunem, per_row=True), 0), {}


def wanda_prune(
    weight: torch.Tensor,
    input_sq_norms: torch.Tensor,
    sparsity: float,
    prunen: int = 0,
    prunem: int = 0,
    cumulative: bool = False,
) -> torch.Tensor:
    """Prune ``weight`` (out x in) with Wanda: score |W_ij| * sqrt(s_j), no weight update.

    ``input_sq_norms[j]`` is the mean over sequences of the squared L2 norm (over tokens) of input
    channel j, i.e. diag(H) / 2 of the SparseGPT Hessian. Unstructured: exactly
    ``int(in_features * sparsity)`` lowest scores per output row (the output is a weighted sum of
    a row, so rows are the comparison group). N:M (``prunem > 0``, ``sparsity`` ignored): the N
    lowest per row in every aligned group of M inputs. ``cumulative``: the variant with one
    threshold alpha on per-row cumulative scores (unstructured only; within CUMULATIVE_TOLERANCE of
    the target). Returns a new tensor with the dtype and shape of ``weight``.
    """
    return _wanda(weight, input_sq_norms, sparsity, prunen, prunem, cumulative)[0]


def prune(
    weight: torch.Tensor, sq_norms: torch.Tensor, *, sparsity: float, prunen: int = 0, prunem: int = 0,
    cumulative: bool = False, **_: Any,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The driver's call: (pruned weight, report fields: alpha for the cumulative variant)."""
    return _wanda(weight, sq_norms, sparsity, prunen, prunem, cumulative)
