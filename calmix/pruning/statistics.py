"""Calibration statistics of a linear's inputs, accumulated over the batches of one decoder layer."""

from __future__ import annotations

import math

import torch


class Statistic:
    """Running mean over sequences (as in the reference) of a per-sequence input statistic, float32.

    Every window counts as one sequence; calmix shards never pad, so every token is real.
    ``result()`` is the statistic.
    """

    def __init__(self, value: torch.Tensor):
        self.value = value
        self.nsamples = 0

    def add(self, inp: torch.Tensor) -> None:
        batch = inp.shape[0] if inp.dim() > 2 else 1  # a 2-D input counts as one sequence
        x = inp.detach().reshape(-1, inp.shape[-1])
        x = x.to(torch.float32)
        self.value *= self.nsamples / (self.nsamples + batch)
        self.nsamples += batch
        self._accumulate(x)

    def result(self) -> torch.Tensor:
        return self.value


class Hessian(Statistic):
    """H = 2/n sum X X^T, accumulating only the upper block triangle.

    X^T X is symmetric, so each batch updates the row blocks of ``BLOCK`` columns from the diagonal
    on (one matmul each): about 0.55x the flops of the full product, the largest saving of the
    statistics pass on a CPU. ``result()`` mirrors the upper blocks into the lower ones once.
    """

    BLOCK = 256

    def __init__(self, columns: int, device: torch.device):
        super().__init__(torch.zeros(columns, columns, dtype=torch.float32, device=device))
        self.edges = list(range(0, columns, self.BLOCK)) + [columns]

    def _accumulate(self, x: torch.Tensor) -> None:
        x = x * math.sqrt(2 / self.nsamples)
        for a, b in zip(self.edges, self.edges[1:]):
            self.value[a:b, a:].addmm_(x[:, a:b].t(), x[:, a:])

    def result(self) -> torch.Tensor:
        for a, b in zip(self.edges, self.edges[1:]):
            self.value[b:, a:b] = self.value[a:b, b:].t()
        return self.value


class SqNorms(Statistic):
    """s_j = 1/n sum over tokens of x_j^2 = diag(H) / 2, without the (in x in) matrix."""

    def __init__(self, columns: int, device: torch.device):
        super().__init__(torch.zeros(columns, dtype=torch.float32, device=device))

    def _accumulate(self, x: torch.Tensor) -> None:
        self.value.add_(x.square().sum(0), alpha=1 / self.nsamples)


#: The statistic each method names in its registry record -> its accumulator.
STATISTICS: dict[str, type[Statistic]] = {"hessian": Hessian, "sq_norms": SqNorms}


def reconstruction_error(weight: torch.Tensor, pruned: torch.Tensor, hessian: torch.Tensor, rows: int = 512) -> float | None:
    """Relative squared output error ||(W - W')X||^2 / ||WX||^2 on the calibration inputs.

    Equals tr(D H D^T) / tr(W H W^T) with D = W - W', so it needs only the Hessian. Taken ``rows``
    output rows at a time, so it adds no weight-sized temporaries beside the Hessian (which, with
    SparseGPT's factor, bounds a layer's peak at 8B shapes). None when the dense output is identically zero.
    """
    H = hessian.to(dtype=torch.float32)
    num = den = 0.0
    for start in range(0, weight.shape[0], rows):
        W = weight[start:start + rows].detach().to(device=H.device, dtype=torch.float32)
        D = W - pruned[start:start + rows].detach().to(device=H.device, dtype=torch.float32)
        num += torch.sum((D @ H) * D).item()
        den += torch.sum((W @ H) * W).item()
    return num / den if den > 0 else None
