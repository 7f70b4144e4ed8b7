"""SparseGPT (Frantar & Alistarh, 2023) on one weight matrix: the OBS column sweep with lazy batch updates.

Follows IST-DASLab/sparsegpt (docs/reference.md, "SparseGPT") except that the unstructured mask prunes
exactly ``int(numel * sparsity)`` entries per column block, and a failed Cholesky factorisation is
retried with 10x more damping (at most 3 times), logged and recorded, then raises -- never a silent
identity fallback. Needs the Hessian statistic; the driver computes one inverse factor per group of
linears fed the same input (``prepare``) and calls ``prune`` for each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from calmix.pruning.masks import PruningError, check_args, check_blocksize, check_weight, lowest_k

log = logging.getLogger(__name__)

#: How many times a failed Cholesky factorisation is retried, each with 10x the damping.
CHOLESKY_RETRIES = 3



def _inverse_cholesky(hessian: torch.Tensor, diagonal: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor U of (H + damp*I)^-1, plus the relative damping actually used.

    ``diagonal`` is H's diagonal as factorised (dead inputs set to 1). Row i of U (from column i on)
    is the OBS update once columns < i are fixed, so a single factorisation serves the whole sweep.
    Damping is relative to mean(diag(H)), which makes the scale of H irrelevant. Each step frees the
    matrix before it, so at most two (in x in) float32 matrices live beside H (0.8 GB each at
    Llama-3.1-8B's down projection: 14,336 inputs).
    """
    columns = hessian.shape[0]
    mean_diag = torch.mean(diagonal)
    damp = percdamp
    for attempt in range(CHOLESKY_RETRIES + 1):
        u = hessian.to(torch.float32, copy=True)
        u.diagonal().copy_(diagonal + damp * mean_diag)
        try:
            u = torch.linalg.cholesky(u)
            u = torch.cholesky_inverse(u)
            u = torch.linalg.cholesky(u, upper=True)
        except torch.linalg.LinAlgError as exc:
            reason = str(exc).splitlines()[0].rstrip(".")
        else:
            if all(torch.isfinite(rows).all() for rows in u.split(1024)):  # no (in x in) mask beside U
                return u, damp
            reason = "non-finite factor"
        del u
        if attempt < CHOLESKY_RETRIES:
            log.warning(
                "Cholesky failed with damping %.3g (%s); retrying with %.3g", damp, reason, damp * 10
            )
            damp *= 10
    raise PruningError(
        f"Hessian ({columns}x{columns}) is not positive definite even with relative damping "
        f"{damp:.3g} (started at {percdamp:.3g}, {CHOLESKY_RETRIES} retries): {reason}. "
        "Check the calibration data (too few tokens? NaN activations?) or raise percdamp."
    )


@dataclass(frozen=True)
class InverseFactor:
    """What SparseGPT needs from a Hessian, computed once per statistic and shared by every linear
    fed the same input (q/k/v, gate/up): U = chol((H + damp I)^-1, upper), the dead inputs and the
    relative damping used. The reference factorises once per linear."""

    U: torch.Tensor
    dead: torch.Tensor
    damping: float

    @classmethod
    def of(cls, hessian: torch.Tensor, percdamp: float = 0.01) -> InverseFactor:
        if hessian.dim() != 2 or hessian.shape[0] != hessian.shape[1]:
            raise ValueError(f"hessian must be square, got {tuple(hessian.shape)}")
        hessian = hessian.detach()
        if not torch.isfinite(hessian).all():
            raise PruningError("Hessian contains NaN or Inf (non-finite calibration activations)")
        # Inputs that never fire carry no information: make H invertible there (their weights go).
        diagonal = torch.diag(hessian).to(torch.float32, copy=True)
        dead = diagonal == 0
        diagonal[dead] = 1
        U, damp = _inverse_cholesky(hessian, diagonal, percdamp)
        return cls(U, dead, damp)


def _sparsegpt(
    weight: torch.Tensor,
    factor: InverseFactor,
    sparsity: float,
    prunen: int = 0,
    prunem: int = 0,
    blocksize: int = 128,
) -> torch.Tensor:
    """The SparseGPT column sweep of one weight matrix, given its input's inverse factor."""
    rows, columns = check_weight(weight)
    if factor.U.shape != (columns, columns):
        raise ValueError(f"hessian must be {columns}x{columns}, got {tuple(factor.U.shape)}")
    check_args(sparsity, prunen, prunem, columns)
    check_blocksize(blocksize, prunem)

    W = weight.detach().to(device=factor.U.device, dtype=torch.float32, copy=True)
    W[:, factor.dead] = 0
    Hinv = factor.U

    # The sweep runs on each block transposed (count x rows): column i of the block is one contiguous row,
    # so its update reads and writes contiguous memory (a strided column slice is several times slower on
    # a CPU). The update is a product into a buffer, then a subtraction: two roundings per element, as the
    # strided outer-product update rounds, so the weights are the same to the bit (a fused multiply-add,
    # which addr_ and addcmul_ take on contiguous memory, is not: tests/test_pruning.py).
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        Hinv1 = Hinv[i1:i2, i1:i2]
        d1 = torch.diag(Hinv1)

        if prunem == 0:
            # One mask for the block from the already updated weights; OBS saliency w^2 / U_ii^2.
            scores = (W[:, i1:i2] ** 2 / (d1.reshape(1, -1) ** 2)).flatten()
            mask1 = lowest_k(scores, int(scores.numel() * sparsity)).reshape(rows, count).T.contiguous()
        else:
            mask1 = torch.zeros(count, rows, dtype=torch.bool, device=W.device)
        W1 = W[:, i1:i2].T.contiguous()
        Err1 = torch.zeros_like(W1)
        update = torch.empty_like(W1)

        zero = W1.new_zeros(())
        for i in range(count):
            if prunem and i % prunem == 0:
                # N:M decided lazily, when the group's first column comes up, from updated weights.
                scores = W1[i : i + prunem].T ** 2 / (d1[i : i + prunem].reshape(1, -1) ** 2)
                low = torch.topk(scores, prunen, dim=1, largest=False, sorted=True)[1]
                mask1.T.scatter_(1, i + low, True)
            # err = (w - q) / d with q = w zeroed where pruned: w where pruned, 0 where kept.
            err1 = torch.where(mask1[i], W1[i], zero) / d1[i]
            # Outer-product update; it also sets column i to q, up to rounding where pruned (zeroed below).
            W1[i:].sub_(torch.mul(Hinv1[i, i:, None], err1, out=update[: count - i]))
            Err1[i] = err1
        W[:, i1:i2] = W1.masked_fill_(mask1, 0).T
        # Lazy batch update: the block's accumulated error reaches later columns in one matmul.
        W[:, i2:] -= Err1.T.contiguous().matmul(Hinv[i1:i2, i2:])

    return W.to(device=weight.device, dtype=weight.dtype)


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    prunen: int = 0,
    prunem: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> torch.Tensor:
    """Prune ``weight`` (out_features x in_features) with SparseGPT given the layer Hessian.

    ``hessian`` is the (in x in) input statistic 2/n * sum X X^T. Unstructured when ``prunem == 0``
    (exactly ``int(numel * sparsity)`` zeros per column block of ``blocksize``), otherwise N:M with
    N = ``prunen`` along the input dimension (``sparsity`` is then ignored). The surviving weights
    are updated to compensate (OBS). Computes in float32 and returns a new tensor with the dtype
    and shape of ``weight``; the inputs are not modified. Raises :class:`PruningError` when the
    Hessian cannot be factorised even after raising the damping.
    """
    _, columns = check_weight(weight)
    if hessian.shape != (columns, columns):
        raise ValueError(f"hessian must be {columns}x{columns}, got {tuple(hessian.shape)}")
    return _sparsegpt(weight, InverseFactor.of(hessian.to(weight.device), percdamp), sparsity, prunen, prunem, blocksize)



def prepare(hessian: torch.Tensor, *, percdamp: float = 0.01, **_: Any) -> InverseFactor:
    """Once per group of linears sharing an input: the inverse factor of their Hessian."""
    return InverseFactor.of(hessian, percdamp)


def prune(
    weight: torch.Tensor, factor: InverseFactor, *, sparsity: float, prunen: int = 0, prunem: int = 0,
    blocksize: int = 128, **_: Any,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The driver's call: (pruned weight, report fields)."""
    return _sparsegpt(weight, factor, sparsity, prunen, prunem, blocksize), {"damping": factor.damping}
