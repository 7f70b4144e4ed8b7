"""One-shot pruning of causal LMs: SparseGPT (Frantar & Alistarh, 2023), Wanda (Sun et al., 2024), magnitude.

SparseGPT follows IST-DASLab/sparsegpt (see docs/reference.md, "SparseGPT") with three deliberate changes:

* the unstructured mask prunes exactly ``int(numel * sparsity)`` entries per column block (the
  reference's ``score <= threshold`` prunes one extra entry per block, and more on ties);
* a failed Cholesky factorisation is retried with 10x more damping (at most 3 times), logged and
  recorded in the report, then raises :class:`PruningError` -- never a silent identity fallback;
* the driver records every argument the model passes to each decoder layer (transformers 5 passes
  rotary ``position_embeddings`` and per-layer-type attention masks), instead of only the mask.

Wanda (docs/reference.md, "Wanda") prunes exactly ``floor(in * sparsity)`` per row with a stable sort (the
reference's ``<=`` threshold prunes extra entries on ties); its cumulative variant never prunes a whole
row by accident (the reference gathers index -1 when no entry is below the threshold).

The driver works one decoder layer at a time with error propagation: layer ``i`` is calibrated on
the outputs of the already pruned layers ``< i``. Linears that receive the same input tensor (q/k/v,
gate/up) share one statistic, found by a probe rather than by module names; the reference
accumulates one Hessian per linear.
"""

from __future__ import annotations

import logging
import math
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = [
    "PruningError",
    "Pruner",
    "sparsegpt_prune",
    "InverseFactor",
    "wanda_prune",
    "magnitude_prune",
    "prune_model",
    "model_sparsity",
    "decoder_layers",
    "reconstruction_error",
    "lowest_k",
    "PRUNERS",
]

#: How many times a failed Cholesky factorisation is retried, each with 10x the damping.
CHOLESKY_RETRIES = 3

#: Cumulative Wanda: the achieved sparsity is within this of the target (the Wanda reference's
#: tolerance), else a warning is logged. For real-valued scores it is in fact within one entry; only
#: many tied rows, or more zero scores than the target, can make the steps in alpha coarser.
CUMULATIVE_TOLERANCE = 1e-3

# Where the decoder layer list lives, tried in order (attribute paths from the *ForCausalLM model).
_LAYER_PATHS = (
    "model.layers",  # LLaMA, Mistral, Qwen2/3, Gemma, Phi3, ...
    "model.decoder.layers",  # OPT
    "model.language_model.layers",  # multimodal wrappers in transformers 5
    "gpt_neox.layers",  # Pythia
    "transformer.h",  # GPT-2 style (uses Conv1D, so nothing would be pruned there)
    "layers",  # a bare decoder model
)


class PruningError(RuntimeError):
    """Pruning cannot continue without silently degrading the model (bad Hessian, NaN outputs)."""


# --------------------------------------------------------------------------------------------
# SparseGPT on one weight matrix
# --------------------------------------------------------------------------------------------


def _check_args(sparsity: float, prunen: int, prunem: int, columns: int) -> None:
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


def _check_blocksize(blocksize: int, prunem: int) -> None:
    if blocksize < 1:
        raise ValueError(f"blocksize must be >= 1, got {blocksize}")
    if prunem and blocksize % prunem:  # a block must hold whole N:M groups
        raise ValueError(f"blocksize {blocksize} is not a multiple of M={prunem}")


def _check_weight(weight: torch.Tensor) -> tuple[int, int]:
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got {tuple(weight.shape)}")
    return weight.shape


def _inverse_cholesky(hessian: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor U of (H + damp*I)^-1, plus the relative damping actually used.

    Row i of U (from column i on) is the OBS update once columns < i are fixed, so a single
    factorisation serves the whole sweep. Damping is relative to mean(diag(H)), which makes the
    scale of H irrelevant.
    """
    columns = hessian.shape[0]
    diag = torch.arange(columns, device=hessian.device)
    mean_diag = torch.mean(torch.diag(hessian))
    damp = percdamp
    for attempt in range(CHOLESKY_RETRIES + 1):
        h = hessian.clone()
        h[diag, diag] += damp * mean_diag
        try:
            u = torch.linalg.cholesky(h)
            u = torch.cholesky_inverse(u)
            u = torch.linalg.cholesky(u, upper=True)
        except torch.linalg.LinAlgError as exc:
            reason = str(exc).splitlines()[0].rstrip(".")
        else:
            if torch.isfinite(u).all():
                return u, damp
            reason = "non-finite factor"
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
        H = hessian.detach().to(torch.float32, copy=True)
        if not torch.isfinite(H).all():
            raise PruningError("Hessian contains NaN or Inf (non-finite calibration activations)")
        # Inputs that never fire carry no information: make H invertible there (their weights go).
        dead = torch.diag(H) == 0
        H[dead, dead] = 1
        U, damp = _inverse_cholesky(H, percdamp)
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
    rows, columns = _check_weight(weight)
    if factor.U.shape != (columns, columns):
        raise ValueError(f"hessian must be {columns}x{columns}, got {tuple(factor.U.shape)}")
    _check_args(sparsity, prunen, prunem, columns)
    _check_blocksize(blocksize, prunem)

    W = weight.detach().to(device=factor.U.device, dtype=torch.float32, copy=True)
    W[:, factor.dead] = 0
    Hinv = factor.U

    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d1 = torch.diag(Hinv1)

        if prunem == 0:
            # One mask for the block from the already updated weights; OBS saliency w^2 / U_ii^2.
            scores = (W1**2 / (d1.reshape(1, -1) ** 2)).flatten()
            mask1 = lowest_k(scores, int(scores.numel() * sparsity)).reshape(rows, count)
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)

        zero = W1.new_zeros(())
        for i in range(count):
            if prunem and i % prunem == 0:
                # N:M decided lazily, when the group's first column comes up, from updated weights.
                scores = W1[:, i : i + prunem] ** 2 / (d1[i : i + prunem].reshape(1, -1) ** 2)
                low = torch.topk(scores, prunen, dim=1, largest=False, sorted=True)[1]
                mask1.scatter_(1, i + low, True)
            # err = (w - q) / d with q = w zeroed where pruned: w where pruned, 0 where kept.
            err1 = torch.where(mask1[:, i], W1[:, i], zero) / d1[i]
            # Outer-product update (addr_ rather than a k=1 matmul: no BLAS threading per column).
            # It also sets column i to q, up to rounding where pruned (zeroed exactly below).
            W1[:, i:].addr_(err1, Hinv1[i, i:], alpha=-1)
            Err1[:, i] = err1
        W[:, i1:i2] = W1.masked_fill_(mask1, 0)
        # Lazy batch update: the block's accumulated error reaches later columns in one matmul.
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])

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
    _, columns = _check_weight(weight)
    if hessian.shape != (columns, columns):
        raise ValueError(f"hessian must be {columns}x{columns}, got {tuple(hessian.shape)}")
    return _sparsegpt(weight, InverseFactor.of(hessian.to(weight.device), percdamp), sparsity, prunen, prunem, blocksize)


def reconstruction_error(weight: torch.Tensor, pruned: torch.Tensor, hessian: torch.Tensor) -> float | None:
    """Relative squared output error ||(W - W')X||^2 / ||WX||^2 on the calibration inputs.

    Equals tr(D H D^T) / tr(W H W^T) with D = W - W', so it needs only the Hessian. None when the
    dense output is identically zero.
    """
    W = weight.detach().float()
    H = hessian.to(device=W.device, dtype=torch.float32)
    D = W - pruned.detach().to(device=W.device, dtype=torch.float32)
    num = torch.sum((D @ H) * D).item()
    den = torch.sum((W @ H) * W).item()
    return num / den if den > 0 else None


# --------------------------------------------------------------------------------------------
# Wanda and magnitude on one weight matrix (masks only, no weight update)
# --------------------------------------------------------------------------------------------


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


def _lowest_mask(scores: torch.Tensor, sparsity: float, prunen: int, prunem: int, per_row: bool) -> torch.Tensor:
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
    _, columns = _check_weight(weight)
    if input_sq_norms.shape != (columns,):
        raise ValueError(f"input_sq_norms must have shape ({columns},), got {tuple(input_sq_norms.shape)}")
    _check_args(sparsity, prunen, prunem, columns)
    if cumulative and prunem:
        raise ValueError("the cumulative Wanda variant is unstructured; it cannot be combined with N:M")
    norms = input_sq_norms.detach().to(device=weight.device, dtype=torch.float32)
    if not torch.isfinite(norms).all() or (norms < 0).any():
        raise PruningError("input norms contain NaN, Inf or negative values (non-finite calibration activations)")
    scores = weight.detach().abs().float() * norms.sqrt()
    if cumulative:
        mask, alpha = _cumulative_mask(scores, sparsity)
        return weight.detach().masked_fill(mask, 0), {"alpha": alpha}
    return weight.detach().masked_fill(_lowest_mask(scores, sparsity, prunen, prunem, per_row=True), 0), {}


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


def magnitude_prune(weight: torch.Tensor, sparsity: float, prunen: int = 0, prunem: int = 0) -> torch.Tensor:
    """Data-free baseline: zero the ``int(numel * sparsity)`` smallest |w| of the whole matrix, or
    per row the N smallest in every aligned group of M inputs (``sparsity`` then ignored)."""
    _, columns = _check_weight(weight)
    _check_args(sparsity, prunen, prunem, columns)
    mask = _lowest_mask(weight.detach().abs().float(), sparsity, prunen, prunem, per_row=False)
    return weight.detach().masked_fill(mask, 0)


# --------------------------------------------------------------------------------------------
# Method registry
# --------------------------------------------------------------------------------------------


def _prune_sparsegpt(
    weight: torch.Tensor, factor: InverseFactor, *, sparsity: float, prunen: int = 0, prunem: int = 0,
    blocksize: int = 128, **_: Any,
) -> tuple[torch.Tensor, dict[str, Any]]:
    return _sparsegpt(weight, factor, sparsity, prunen, prunem, blocksize), {"damping": factor.damping}


def _prepare_sparsegpt(hessian: torch.Tensor, *, percdamp: float = 0.01, **_: Any) -> InverseFactor:
    return InverseFactor.of(hessian, percdamp)


def _prune_wanda(
    weight: torch.Tensor, sq_norms: torch.Tensor, *, sparsity: float, prunen: int = 0, prunem: int = 0,
    cumulative: bool = False, **_: Any,
) -> tuple[torch.Tensor, dict[str, Any]]:
    return _wanda(weight, sq_norms, sparsity, prunen, prunem, cumulative)


def _prune_magnitude(
    weight: torch.Tensor, _statistic: None, *, sparsity: float, prunen: int = 0, prunem: int = 0, **_: Any,
) -> tuple[torch.Tensor, dict[str, Any]]:
    return magnitude_prune(weight, sparsity, prunen, prunem), {}


@dataclass(frozen=True)
class Pruner:
    """A pruning method and the calibration statistic it needs.

    ``fn(weight, prepared, *, sparsity, prunen, prunem, **options)`` returns (pruned weight, extra
    per-linear report fields) and ignores options it does not know. ``statistic`` is "hessian"
    (2/n sum X X^T), "sq_norms" (its diagonal / 2, far cheaper) or None (data-free: no forward).
    ``prepare(statistic, **options)`` turns a statistic into what ``fn`` takes, once for all the
    linears that share it (default: the statistic itself).
    """

    fn: Callable[..., tuple[torch.Tensor, dict[str, Any]]]
    statistic: str | None
    prepare: Callable[..., Any] | None = None

    def __call__(self, weight: torch.Tensor, prepared: Any, **options: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.fn(weight, prepared, **options)


#: Method name -> Pruner. prune_model accepts exactly these names.
PRUNERS: dict[str, Pruner] = {
    "sparsegpt": Pruner(_prune_sparsegpt, "hessian", _prepare_sparsegpt),
    "wanda": Pruner(_prune_wanda, "sq_norms"),
    "magnitude": Pruner(_prune_magnitude, None),
}


# --------------------------------------------------------------------------------------------
# Model-level driver
# --------------------------------------------------------------------------------------------


def _layer_list_and_path(model: nn.Module) -> tuple[nn.ModuleList, str]:
    for path in _LAYER_PATHS:
        obj: Any = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj, path
    raise ValueError(
        f"cannot find the decoder layers of {type(model).__name__}; tried {', '.join(_LAYER_PATHS)}"
    )


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of decoder layers (model.model.layers, model.model.decoder.layers, ...)."""
    return _layer_list_and_path(model)[0]


def _linears(module: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear)}


class _StopForward(Exception):
    """Raised after the last decoder layer's arguments are recorded: the rest is not needed."""


class _Recorder(nn.Module):
    """Stands in for a decoder layer during capture: records its call and skips the computation.

    The real layer is kept unregistered, so moving the model to the device leaves it in place, but
    attribute look-ups fall through to it (some models read e.g. ``layer.attention_type``).
    """

    def __init__(self, layer: nn.Module, index: int, last: bool, calls: list):
        super().__init__()
        object.__setattr__(self, "_wrapped", layer)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_last", last)
        object.__setattr__(self, "_calls", calls)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_wrapped"), name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            hidden, rest = args[0], args[1:]
        else:
            hidden, rest = kwargs.pop("hidden_states"), ()
        self._calls.append((self._index, hidden, rest, kwargs))
        if self._last:
            raise _StopForward
        return hidden  # only the arguments of later layers matter, not their values


def _sanitise_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    # A KV cache would grow with every replay of the same batch and leak earlier passes into
    # attention; the layers must run stateless.
    kwargs = dict(kwargs)
    for key in ("past_key_value", "past_key_values", "layer_past"):
        if key in kwargs:
            kwargs[key] = None
    if "use_cache" in kwargs:
        kwargs["use_cache"] = False
    for key in ("output_attentions",):
        if key in kwargs:
            kwargs[key] = False
    return kwargs


@dataclass
class _Batch:
    hidden: torch.Tensor  # input to the layer being processed
    args: list[tuple]  # per decoder layer: extra positional arguments
    kwargs: list[dict[str, Any]]  # per decoder layer: keyword arguments (masks, rotary cos/sin, ...)
    mask: torch.Tensor | None = None  # (batch, seqlen) bool, True = real token; None = no padding


@torch.no_grad()
def _capture(
    model: nn.Module,
    layers: nn.ModuleList,
    windows: torch.Tensor,
    batch_size: int,
    device: torch.device,
    attention_mask: torch.Tensor | None = None,
) -> list[_Batch]:
    """Run the model up to the decoder layers, batch by batch, recording every layer's arguments.

    Layers that share an argument receive the same tensor object, so recording per layer costs no
    memory in the common case; it matters where layers differ (sliding vs full attention masks,
    local vs global rotary embeddings).
    """
    originals = list(layers)
    model_device = next(model.parameters()).device
    calls: list = []
    for i, layer in enumerate(originals):
        layers[i] = _Recorder(layer, i, i == len(originals) - 1, calls)
    batches = []
    try:
        model.to(device)  # everything but the decoder layers (embeddings, rotary, norms)
        for start in range(0, windows.shape[0], batch_size):
            calls.clear()
            mask = None
            inputs = {"input_ids": windows[start : start + batch_size].to(device)}
            if attention_mask is not None:
                mask = attention_mask[start : start + batch_size].to(device)
                inputs["attention_mask"] = mask
            try:
                model(**inputs, use_cache=False)
            except _StopForward:
                pass
            if len(calls) != len(originals) or [c[0] for c in calls] != list(range(len(originals))):
                raise PruningError(
                    f"expected one call of each of the {len(originals)} decoder layers in order, "
                    f"got calls {[c[0] for c in calls]}"
                )
            batches.append(
                _Batch(
                    hidden=calls[0][1],
                    args=[c[2] for c in calls],
                    kwargs=[_sanitise_kwargs(c[3]) for c in calls],
                    mask=None if mask is None else mask.bool(),
                )
            )
    finally:
        calls.clear()
        model.to(model_device)
        for i, layer in enumerate(originals):
            layers[i] = layer
    return batches


def _layer_output(out: Any) -> torch.Tensor:
    # transformers 5 decoder layers return the hidden states; older or other ones a tuple.
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) or hasattr(out, "__getitem__"):
        return out[0]
    raise TypeError(f"unexpected decoder layer output type {type(out).__name__}")


class _Statistic:
    """Running mean over sequences (as in the reference) of a per-sequence input statistic, float32.

    Padding positions (``mask`` False) are dropped before accumulation; every window still counts as
    one sequence (the driver refuses windows without a real token). ``result()`` is the statistic.
    """

    def __init__(self, value: torch.Tensor):
        self.value = value
        self.nsamples = 0

    def add(self, inp: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        batch = inp.shape[0] if inp.dim() > 2 else 1  # a 2-D input counts as one sequence
        x = inp.detach().reshape(-1, inp.shape[-1])
        if mask is not None:
            x = x[mask.reshape(-1)]
        x = x.to(torch.float32)
        self.value *= self.nsamples / (self.nsamples + batch)
        self.nsamples += batch
        self._accumulate(x)

    def result(self) -> torch.Tensor:
        return self.value


class _Hessian(_Statistic):
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


class _SqNorms(_Statistic):
    """s_j = 1/n sum over tokens of x_j^2 = diag(H) / 2, without the (in x in) matrix."""

    def __init__(self, columns: int, device: torch.device):
        super().__init__(torch.zeros(columns, dtype=torch.float32, device=device))

    def _accumulate(self, x: torch.Tensor) -> None:
        self.value.add_(x.square().sum(0), alpha=1 / self.nsamples)


_STATISTICS: dict[str, type[_Statistic]] = {"hessian": _Hessian, "sq_norms": _SqNorms}


def _run_layer(layer: nn.Module, batch: _Batch, index: int, name: str) -> torch.Tensor:
    out = _layer_output(layer(batch.hidden, *batch.args[index], **batch.kwargs[index]))
    real = out if batch.mask is None else out[batch.mask]  # padding outputs are never used
    if not torch.isfinite(real).all():
        raise PruningError(f"decoder layer {name} produced NaN/Inf outputs")
    return out


@dataclass
class _Probe:
    """What one forward of the unpruned layer on the first batch shows about its structure."""

    groups: list[list[str]]  # linears fed the very same input, in execution order; the leader first
    inputs: dict[str, list[torch.Tensor]]  # linear -> its inputs (the first batch of the statistics)
    calls: dict[str, int]  # module -> calls per forward
    first: dict[str, int]  # module -> position of its first call
    arguments: dict[str, tuple[tuple, dict]]  # linear's parent module -> (args, kwargs) of its call


def _probe(layer: nn.Module, linears: dict[str, nn.Linear], run: Callable[[], Any]) -> _Probe:
    """Group the linears that receive the very same input tensors (q/k/v, gate/up) by one probe run.

    Every input is kept alive until the grouping is done, so a freed tensor's memory cannot be reused
    by another and identity (``is``) is exact. Groups come in execution order (the first member, the
    leader, is the first called; linears not called come last, alone). The call order and arguments
    of the linears' parents (self_attn, mlp) let true-sequential passes start inside the layer.
    """
    inputs: dict[str, list[torch.Tensor]] = {}
    calls: dict[str, int] = {}
    first: dict[str, int] = {}
    arguments: dict[str, tuple[tuple, dict]] = {}
    parents = {n.rpartition(".")[0] for n in linears} - {""}

    def enter(name: str) -> Callable[..., None]:
        def record(module, args, kwargs):
            first.setdefault(name, len(first))
            calls[name] = calls.get(name, 0) + 1
            if name in linears:
                inputs.setdefault(name, []).append(args[0])
            elif name not in arguments:
                arguments[name] = (args, kwargs)

        return record

    hooks = [
        layer.get_submodule(n).register_forward_pre_hook(enter(n), with_kwargs=True) for n in [*linears, *parents]
    ]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    groups: list[list[str]] = []
    for name in sorted(linears, key=lambda n: first.get(n, len(first))):
        mine = inputs.get(name, [])
        for group in groups:
            theirs = inputs.get(group[0], [])
            if mine and len(mine) == len(theirs) and all(a is b for a, b in zip(mine, theirs)):
                group.append(name)
                break
        else:
            groups.append([name])
    return _Probe(groups, inputs, calls, first, arguments)


def _stage_entries(stages: list[list[list[str]]], probe: _Probe) -> list[str | None]:
    """Per stage, the submodule a statistics pass can start from instead of the whole layer.

    Stage k may start at its leader's parent P (e.g. ``mlp`` for down_proj) when P is called once
    per forward, contains the whole stage, and is entered before stage k-1's leader runs: then P's
    arguments, recorded during stage k-1's pass, do not depend on anything pruned since, and the
    layer before P (attention, norms) need not be recomputed. That pass must itself enter P.
    """
    entries: list[str | None] = [None]
    for k in range(1, len(stages)):
        parent = stages[k][0][0].rpartition(".")[0]
        before, prev = stages[k - 1][0][0], entries[k - 1]
        ok = (
            parent
            and probe.calls.get(parent) == 1
            and probe.first.get(parent, math.inf) < probe.first.get(before, -1)
            and all(m.startswith(parent + ".") for g in stages[k] for m in g)
            and (prev is None or parent == prev or parent.startswith(prev + "."))
        )
        entries.append(parent if ok else None)
    return entries


def _collect(
    layer: nn.Module, batches: list[_Batch], stats: dict[nn.Linear, _Statistic], index: int, name: str,
    stop_after: nn.Linear | None = None,
    start: tuple[nn.Module, list[tuple[tuple, dict]]] | None = None,
    record: nn.Module | None = None,
) -> list[tuple[tuple, dict]]:
    """One pass of the batches through the layer, each statistic fed by its group leader's inputs.

    With ``stop_after`` (the last linear whose input is needed, called once per forward) the pass
    ends as soon as that input is recorded: the rest of the layer (e.g. down_proj's matmul and the
    residual) would only produce outputs that are thrown away. ``start`` = (submodule, its arguments
    per batch) runs that submodule instead of the whole layer. Returns the arguments of ``record``'s
    call per batch (the next stage's start).
    """
    mask = None
    recorded: list[tuple[tuple, dict]] = []

    def hook(lin: nn.Linear, stat: _Statistic) -> Callable[..., None]:
        def add(module, args):
            stat.add(args[0], mask)
            if lin is stop_after:
                raise _StopForward

        return add

    hooks = [lin.register_forward_pre_hook(hook(lin, stat)) for lin, stat in stats.items()]
    if record is not None:
        hooks.append(record.register_forward_pre_hook(lambda m, a, kw: recorded.append((a, kw)), with_kwargs=True))
    try:
        for i, batch in enumerate(batches):
            mask = batch.mask
            try:
                if start is None:
                    layer(batch.hidden, *batch.args[index], **batch.kwargs[index])
                else:
                    args, kwargs = start[1][i]
                    start[0](*args, **kwargs)
            except _StopForward:
                continue
    finally:
        for h in hooks:
            h.remove()
    return recorded


def nm_valid(weight: torch.Tensor, prunen: int, prunem: int) -> bool | None:
    """Whether every aligned group of M inputs in every row has >= N zeros; None if unstructured."""
    if not prunem:
        return None
    rows, columns = weight.shape
    if columns % prunem:
        return False
    return bool(((weight == 0).reshape(rows, columns // prunem, prunem).sum(-1) >= prunen).all())


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    # ru_maxrss is in KiB on Linux, bytes on macOS; it covers the whole process lifetime.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "process_peak_rss"


def _prune_layer(
    layer: nn.Module,
    name: str,
    index: int,
    batches: list[_Batch],
    pruner: Pruner,
    opts: dict[str, Any],
    skip: list[str],
    true_sequential: bool,
    device: torch.device,
) -> list[dict[str, Any]]:
    """Collect one decoder layer's statistics, prune its linears, then propagate the batches.

    Stat groups are pruned in execution order; with ``true_sequential`` each group's statistic is
    collected after the groups before it are pruned (one pass per group), otherwise all come from
    one pass through the unpruned layer.
    """
    linears = _linears(layer)
    skipped = {n for n in linears if any(fnmatch(f"{name}.{n}", p) for p in skip)}
    if pruner.statistic is None:
        probe = _Probe([[n] for n in linears], {}, {}, {}, {})
    else:
        probe = _probe(layer, linears, lambda: _run_layer(layer, batches[0], index, name))
    leader = {member: group[0] for group in probe.groups for member in group}
    entries: dict[str, dict[str, Any]] = {}

    def report(member: str, weight: torch.Tensor, hessian: torch.Tensor | None, extra: dict[str, Any]) -> None:
        lin = linears[member]
        entry: dict[str, Any] = {"name": f"{name}.{member}", **_count(weight), "skipped": member in skipped}
        entry["stats_group"] = f"{name}.{leader[member]}" if pruner.statistic else None
        entry["nm_valid"] = nm_valid(weight, opts["prunen"], opts["prunem"])
        entry["recon_error"] = None if hessian is None else reconstruction_error(lin.weight.data, weight, hessian)
        entries[member] = {**entry, **extra}

    for member in skipped:
        report(member, linears[member].weight.data, None, {})
    todo = [group for group in probe.groups if any(m not in skipped for m in group)]
    if true_sequential:
        stages = [[group] for group in todo]
    else:
        stages = [todo] if todo else []
    starts = _stage_entries(stages, probe) if pruner.statistic is not None else []
    recorded: list[tuple[tuple, dict]] = []
    for k, stage in enumerate(stages):
        stats: dict[str, _Statistic] = {}
        if pruner.statistic is not None:
            stats = {g[0]: _STATISTICS[pruner.statistic](linears[g[0]].in_features, device) for g in stage}
            if k == 0:  # the probe already ran the first batch through the unpruned layer
                for lead, stat in stats.items():
                    for x in probe.inputs.get(lead, ()):
                        stat.add(x, batches[0].mask)
                probe.inputs.clear()
            # Stop each pass at the stage's last input if every leader runs once per forward.
            last = stage[-1][0]
            once = all(probe.calls.get(g[0]) == 1 for g in stage)
            here, after = starts[k], (starts[k + 1] if k + 1 < len(stages) else None)
            recorded = _collect(
                layer, batches[1:] if k == 0 else batches, {linears[g]: s for g, s in stats.items()}, index, name,
                stop_after=linears[last] if once else None,
                start=None if here is None else (layer.get_submodule(here), recorded),
                record=None if after is None else layer.get_submodule(after),
            )
            if k == 0 and after is not None:
                recorded.insert(0, probe.arguments[after])
            for lead, stat in stats.items():
                if stat.nsamples == 0:
                    log.warning("%s.%s was never called on the calibration data: empty statistic", name, lead)
        for group in stage:
            stat = stats[group[0]].result() if stats else None
            try:
                prepared = pruner.prepare(stat, **opts) if pruner.prepare else stat
            except PruningError as exc:
                shared = f" (shared by {', '.join(group)})" if len(group) > 1 else ""
                raise PruningError(f"{name}.{group[0]}{shared}: {exc}") from exc
            for member in group:
                if member in skipped:
                    continue
                lin = linears[member]
                try:
                    pruned, extra = pruner(lin.weight.data, prepared, **opts)
                except PruningError as exc:
                    raise PruningError(f"{name}.{member}: {exc}") from exc
                report(member, pruned, stat if pruner.statistic == "hessian" else None, extra)
                lin.weight.data.copy_(pruned)
                log.debug("%s.%s: %s", name, member, entries[member])
            del prepared
        del stats
    del recorded, probe

    # Error propagation: the next layer sees what this pruned layer produces.
    for batch in batches:
        batch.hidden.copy_(_run_layer(layer, batch, index, name))  # reuse the captured buffers: no heap churn
    return [entries[n] for n in linears]


def _check_skip(skip: list[str], names: list[str]) -> None:
    """Refuse skip patterns that prune nothing: a pattern matching no linear is a typo, and patterns
    matching them all would make the "pruned" checkpoint the dense model (it would even be evaluated
    as one). Checked before any work, so the job fails at once."""
    for pattern in skip:
        if not any(fnmatch(n, pattern) for n in names):
            raise PruningError(
                f"pruning.skip: pattern {pattern!r} matches no linear layer of the decoder layers (names look like "
                f"{names[0] if names else 'none'}; embeddings and lm_head are never pruned); fix or remove it"
            )
    if skip and names and all(any(fnmatch(n, p) for p in skip) for n in names):
        raise PruningError(
            f"pruning.skip: {skip} skip all {len(names)} linear layers, so nothing would be pruned and the dense "
            "model would stand for the pruned one; skip fewer layers"
        )


def prune_model(
    model: nn.Module,
    windows: torch.LongTensor | None,
    sparsity: float,
    *,
    method: str = "sparsegpt",
    prunen: int = 0,
    prunem: int = 0,
    batch_size: int = 4,
    blocksize: int = 128,
    percdamp: float = 0.01,
    device: str | torch.device = "cpu",
    cumulative: bool = False,
    true_sequential: bool = False,
    skip: Sequence[str] = (),
    attention_mask: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Prune the decoder-layer linears of a Hugging Face causal LM in place; return a report.

    ``windows`` (nsamples x seqlen token ids) are the calibration inputs; None is allowed for the
    data-free ``method="magnitude"``, which runs no forward pass at all. Layers are processed in
    order and each is calibrated on the outputs of the already pruned layers before it (error
    propagation); only the current decoder layer and the activations live on ``device``, the other
    layers stay where they are. Linears fed the same input tensor share one statistic.

    ``sparsity`` is ignored in N:M mode (``prunem > 0``, N = ``prunen``), where the sparsity is N/M.
    ``cumulative`` selects the cumulative Wanda variant (wanda, unstructured only; ignored
    otherwise). ``true_sequential`` re-collects each stat group's statistic after the groups
    before it in the layer are pruned. ``skip``: fnmatch patterns of full linear names left dense;
    embeddings and lm_head are never pruned; a pattern that matches no linear, or patterns that
    match them all, raise :class:`PruningError` before any work. ``attention_mask`` (like
    ``windows``, 1 = real token) drops padding from every statistic; calmix shards never pad, so it
    is for other callers.

    The JSON-serialisable report: method; statistic ("hessian", "sq_norms" or None); sparsity,
    prunen, prunem, cumulative (as applied), true_sequential, skip; nsamples, seqlen and ntokens
    (real tokens), None when no data is used; ``layers``, one entry per linear in module order:
    name, numel, zeros, sparsity, skipped, stats_group (its group leader's name; None if data-free),
    nm_valid (None if unstructured), recon_error (relative output error from the Hessian, None
    without one or when skipped), plus damping (sparsegpt) or alpha (cumulative wanda) when pruned;
    ``total`` (numel, zeros, sparsity over all entries, skipped ones included); wall_time_s;
    peak_memory_mb with peak_memory_kind: "cuda_max_allocated" (since this call started) or
    "process_peak_rss" (the process's lifetime peak, which may predate this call).
    """
    if method not in PRUNERS:
        raise ValueError(f"unknown pruning method {method!r}; known methods: {', '.join(sorted(PRUNERS))}")
    pruner = PRUNERS[method]
    if windows is None and pruner.statistic is not None:
        raise ValueError(f"method {method!r} needs calibration windows")
    if windows is not None and pruner.statistic is not None:
        if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.dtype != torch.long:
            raise ValueError("windows must be a 2-D torch.LongTensor (nsamples x seqlen)")
        if windows.shape[0] == 0 or windows.shape[1] == 0:
            raise ValueError(f"windows is empty: shape {tuple(windows.shape)}")
        if attention_mask is not None:
            if attention_mask.shape != windows.shape or not ((attention_mask == 0) | (attention_mask == 1)).all():
                raise ValueError(f"attention_mask must be 0/1 with the shape of windows {tuple(windows.shape)}")
            if not attention_mask.bool().any(1).all():
                raise ValueError("attention_mask has a window without any real token")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _check_args(sparsity, prunen, prunem, max(prunem, 1))
    if method == "sparsegpt":
        _check_blocksize(blocksize, prunem)
    cumulative = bool(cumulative) and method == "wanda" and not prunem
    skip = [skip] if isinstance(skip, str) else list(skip)
    device = torch.device(device)
    opts = dict(
        sparsity=sparsity, prunen=prunen, prunem=prunem, blocksize=blocksize, percdamp=percdamp, cumulative=cumulative
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    t_start = time.perf_counter()
    layers, path = _layer_list_and_path(model)
    _check_skip(skip, [f"{path}.{index}.{name}" for index, layer in enumerate(layers) for name in _linears(layer)])
    was_training = model.training
    model.eval()  # no dropout in the statistics
    report_layers: list[dict[str, Any]] = []
    try:
        with torch.no_grad():
            batches = []
            if pruner.statistic is not None:
                batches = _capture(model, layers, windows, batch_size, device, attention_mask)
                log.info(
                    "captured %d windows x %d tokens in %d batches; pruning %d decoder layers with %s",
                    windows.shape[0], windows.shape[1], len(batches), len(layers), method,
                )
            for index, layer in enumerate(layers):
                t_layer = time.perf_counter()
                home = next(layer.parameters()).device
                layer.to(device)
                try:
                    report_layers += _prune_layer(
                        layer, f"{path}.{index}", index, batches, pruner, opts, skip, true_sequential, device
                    )
                finally:
                    layer.to(home)
                log.info("layer %d/%d pruned in %.1f s", index + 1, len(layers), time.perf_counter() - t_layer)
    finally:
        model.train(was_training)

    numel = sum(e["numel"] for e in report_layers)
    zeros = sum(e["zeros"] for e in report_layers)
    used = pruner.statistic is not None
    peak_mb, peak_kind = _peak_memory(device)
    return {
        "method": method,
        "statistic": pruner.statistic,
        "sparsity": sparsity,
        "prunen": prunen,
        "prunem": prunem,
        "cumulative": cumulative,
        "true_sequential": bool(true_sequential),
        "skip": skip,
        "nsamples": int(windows.shape[0]) if used else None,
        "seqlen": int(windows.shape[1]) if used else None,
        "ntokens": (int(windows.numel() if attention_mask is None else attention_mask.sum())) if used else None,
        "layers": report_layers,
        "total": {"numel": numel, "zeros": zeros, "sparsity": zeros / numel if numel else 0.0},
        "wall_time_s": time.perf_counter() - t_start,
        "peak_memory_mb": peak_mb,
        "peak_memory_kind": peak_kind,
    }


def _count(weight: torch.Tensor) -> dict[str, Any]:
    numel = weight.numel()
    zeros = int((weight == 0).sum().item())
    return {"numel": numel, "zeros": zeros, "sparsity": zeros / numel if numel else 0.0}


def model_sparsity(model: nn.Module) -> dict[str, Any]:
    """Fraction of exact zeros in the decoder layers' linear weights (e.g. of a reloaded checkpoint)."""
    layers, path = _layer_list_and_path(model)
    per_layer: dict[str, float] = {}
    numel = zeros = 0
    for index, layer in enumerate(layers):
        for name, lin in _linears(layer).items():
            c = _count(lin.weight.data)
            per_layer[f"{path}.{index}.{name}"] = c["sparsity"]
            numel += c["numel"]
            zeros += c["zeros"]
    return {"numel": numel, "zeros": zeros, "sparsity": zeros / numel if numel else 0.0, "layers": per_layer}
