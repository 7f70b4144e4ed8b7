"""What every method shares on one weight matrix: argument checks, exact lowest-k masks and N:M checks.

Ties are deterministic (the lower index is pruned first) and counts are exact, unlike the references'
``score <= threshold`` (docs/reference.md, "SparseGPT" and "Wanda").
"""

from __future__ import annotations

from typing import Any

import torch


class PruningError(RuntimeError):
    """Pruning cannot continue without silently degrading the model (bad Hessian, NaN outputs)."""


def check_args(sparsity: float, prunen: int, prunem: int, columns: int) -> None:
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    if prunem < 0 or prunen < 0:
        raise ValueError(f"N:M needs prunen, prunem >= 0, got {prunen}:{prunem}")
    if prunem > 0:
        if not 0 < prunen <= prunem:
            raise ValueError(f"N:M needs 0 < N <= M, got {prunen}:{prunem}")
        # Groups are aligned to absolute column indices, so the last group must be complete.
        if columns % prunem:
            raise ValueError(f"in_features {columns} is not a multiple of M={prunem}")
    elif prunen:
        raise ValueError(f"prunen={prunen} given without prunem")


def check_blocksize(blocksize: int, prunem: int) -> None:
    if blocksize < 1:
        raise ValueError(f"blocksize must be >= 1, got {blocksize}")
    if prunem and blocksize % prunem:  # a block must hold whole N:M groups
        raise ValueError(f"blocksize {blocksize} is not a multiple of M={prunem}")


def check_weight(weight: torch.Tensor) -> tuple[int, int]:
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got {tuple(weight.shape)}")
    return weight.shape


def lowest_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` lowest entries along the last dimension, ties broken towards the
    lower index: exactly what the first ``k`` of a stable ascending argsort select.

    A selection (``kthvalue``, linear time) instead of a full stable sort, which on the CPU was the
    single largest cost of SparseGPT's per-block masks. Scores must be free of NaN.
    """
    n = scores.shape[-1]
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(scores, k, dim=-1, keepdim=True).values
    mask = scores <= threshold
    excess = mask.sum(-1, keepdim=True) - k
    if bool((excess > 0).any()):  # ties at the threshold: unmark the highest-indexed ones
        tie = scores == threshold
        from_right = tie.flip(-1).cumsum(-1).flip(-1)
        mask &= ~(tie & (from_right <= excess))
    return mask


def lowest_mask(scores: torch.Tensor, sparsity: float, prunen: int, prunem: int, per_row: bool) -> torch.Tensor:
    """Boolean mask of the lowest scores: N per aligned group of M inputs in every row (N:M), else
    ``int(n * sparsity)`` per row (``per_row``) or over the whole matrix. Ties are deterministic (the
    lower index is pruned first) and the count is exact (:func:`lowest_k`)."""
    rows, columns = scores.shape
    if prunem:
        groups, k = scores.reshape(rows, columns // prunem, prunem), prunen
    elif per_row:
        groups, k = scores, int(columns * sparsity)
    else:
        groups, k = scores.reshape(-1), int(scores.numel() * sparsity)
    return lowest_k(groups, k).reshape(rows, columns)


def nm_valid(weight: torch.Tensor, prunen: int, prunem: int) -> bool | None:
    """Whether every aligned group of M inputs in every row has >= N zeros; None if unstructured."""
    if not prunem:
        return None
    rows, columns = weight.shape
    if columns % prunem:
        return False
    return bool(((weight == 0).reshape(rows, columns // prunem, prunem).sum(-1) >= prunen).all())


def count_zeros(weight: torch.Tensor) -> dict[str, Any]:
    numel = weight.numel()
    zeros = int((weight == 0).sum().item())
    return {"numel": numel, "zeros": zeros, "sparsity": zeros / numel if numel else 0.0}

