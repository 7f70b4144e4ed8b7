"""One-shot pruning of causal LMs with SparseGPT (Frantar & Alistarh, 2023).

Follows IST-DASLab/sparsegpt (see REFERENCE.md, "SparseGPT") with three deliberate changes:

* the unstructured mask prunes exactly ``int(numel * sparsity)`` entries per column block (the
  reference's ``score <= threshold`` prunes one extra entry per block, and more on ties);
* a failed Cholesky factorisation is retried with 10x more damping (at most 3 times), logged and
  recorded in the report, then raises :class:`PruningError` -- never a silent identity fallback;
* the driver records every argument the model passes to each decoder layer (transformers 5 passes
  rotary ``position_embeddings`` and per-layer-type attention masks), instead of only the mask.

The driver works one decoder layer at a time with error propagation: layer ``i`` is calibrated on
the outputs of the already pruned layers ``< i``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = [
    "PruningError",
    "sparsegpt_prune",
    "prune_model",
    "model_sparsity",
    "decoder_layers",
    "reconstruction_error",
    "PRUNERS",
]

#: How many times a failed Cholesky factorisation is retried, each with 10x the damping.
CHOLESKY_RETRIES = 3

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


def _check_args(sparsity: float, prunen: int, prunem: int, blocksize: int, columns: int) -> None:
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    if blocksize < 1:
        raise ValueError(f"blocksize must be >= 1, got {blocksize}")
    if prunem < 0 or prunen < 0:
        raise ValueError(f"N:M needs prunen, prunem >= 0, got {prunen}:{prunem}")
    if prunem > 0:
        if not 0 < prunen <= prunem:
            raise ValueError(f"N:M needs 0 < N <= M, got {prunen}:{prunem}")
        # Groups are aligned to absolute column indices, so a block must hold whole groups and the
        # last group must be complete.
        if blocksize % prunem:
            raise ValueError(f"blocksize {blocksize} is not a multiple of M={prunem}")
        if columns % prunem:
            raise ValueError(f"in_features {columns} is not a multiple of M={prunem}")
    elif prunen:
        raise ValueError(f"prunen={prunen} given without prunem")


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
            reason = str(exc).splitlines()[0]
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


def _sparsegpt(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    prunen: int = 0,
    prunem: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[torch.Tensor, float]:
    """SparseGPT sweep; returns (pruned weight, relative damping used)."""
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got {tuple(weight.shape)}")
    rows, columns = weight.shape
    if hessian.shape != (columns, columns):
        raise ValueError(f"hessian must be {columns}x{columns}, got {tuple(hessian.shape)}")
    _check_args(sparsity, prunen, prunem, blocksize, columns)

    W = weight.detach().to(torch.float32, copy=True)
    H = hessian.detach().to(device=W.device, dtype=torch.float32, copy=True)
    if not torch.isfinite(H).all():
        raise PruningError("Hessian contains NaN or Inf (non-finite calibration activations)")

    # Inputs that never fire carry no information: make H invertible there and drop the weights.
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    Hinv, damp = _inverse_cholesky(H, percdamp)
    del H

    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d1 = torch.diag(Hinv1)

        if prunem == 0:
            # One mask for the block from the already updated weights; OBS saliency w^2 / U_ii^2.
            # Exactly k entries: a stable sort makes ties deterministic.
            scores = (W1**2 / (d1.reshape(1, -1) ** 2)).flatten()
            k = int(scores.numel() * sparsity)
            mask1 = torch.zeros(scores.numel(), dtype=torch.bool, device=W.device)
            mask1[torch.argsort(scores, stable=True)[:k]] = True
            mask1 = mask1.reshape(rows, count)
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)

        for i in range(count):
            w = W1[:, i]
            d = d1[i]
            if prunem and i % prunem == 0:
                # N:M decided lazily, when the group's first column comes up, from updated weights.
                scores = W1[:, i : i + prunem] ** 2 / (d1[i : i + prunem].reshape(1, -1) ** 2)
                low = torch.topk(scores, prunen, dim=1, largest=False, sorted=True)[1]
                mask1.scatter_(1, i + low, True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d
            # Outer-product update (addr_ rather than a k=1 matmul: no BLAS threading per column).
            W1[:, i:].addr_(err1, Hinv1[i, i:], alpha=-1)
            Err1[:, i] = err1

        W[:, i1:i2] = Q1
        # Lazy batch update: the block's accumulated error reaches later columns in one matmul.
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])

    return W.to(weight.dtype), damp


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
    return _sparsegpt(weight, hessian, sparsity, prunen, prunem, blocksize, percdamp)[0]


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


def _prune_sparsegpt(
    weight: torch.Tensor, hessian: torch.Tensor, **opts: Any
) -> tuple[torch.Tensor, dict[str, Any]]:
    pruned, damp = _sparsegpt(weight, hessian, **opts)
    return pruned, {"damping": damp}


#: Method name -> function(weight, hessian, *, sparsity, prunen, prunem, blocksize, percdamp)
#: returning (pruned weight, extra per-layer report fields). New methods (wanda, magnitude) go here.
PRUNERS: dict[str, Callable[..., tuple[torch.Tensor, dict[str, Any]]]] = {
    "sparsegpt": _prune_sparsegpt,
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


@torch.no_grad()
def _capture(
    model: nn.Module, layers: nn.ModuleList, windows: torch.Tensor, batch_size: int, device: torch.device
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
            try:
                model(windows[start : start + batch_size].to(device), use_cache=False)
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


class _Hessian:
    """Running mean over sequences of 2 X X^T (float32), fed by a forward hook on an nn.Linear."""

    def __init__(self, columns: int, device: torch.device):
        self.H = torch.zeros(columns, columns, dtype=torch.float32, device=device)
        self.nsamples = 0

    def add(self, inp: torch.Tensor) -> None:
        # One matmul per batch; a 2-D input counts as one sequence (as in the reference).
        batch = inp.shape[0] if inp.dim() > 2 else 1
        x = inp.reshape(-1, inp.shape[-1]).to(torch.float32)
        self.H *= self.nsamples / (self.nsamples + batch)
        self.nsamples += batch
        x = x * math.sqrt(2 / self.nsamples)
        self.H.addmm_(x.t(), x)

    def hook(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        self.add(inputs[0].detach())


def _run_layer(layer: nn.Module, batch: _Batch, index: int, name: str) -> torch.Tensor:
    out = _layer_output(layer(batch.hidden, *batch.args[index], **batch.kwargs[index]))
    if not torch.isfinite(out).all():
        raise PruningError(f"decoder layer {name} produced NaN/Inf outputs")
    return out


def prune_model(
    model: nn.Module,
    windows: torch.LongTensor,
    sparsity: float,
    *,
    method: str = "sparsegpt",
    prunen: int = 0,
    prunem: int = 0,
    batch_size: int = 8,
    blocksize: int = 128,
    percdamp: float = 0.01,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Prune the decoder-layer linears of a Hugging Face causal LM in place; return a report.

    ``windows`` (nsamples x seqlen token ids, no padding) are the calibration inputs. Layers are
    processed in order and each is calibrated on the outputs of the already pruned layers before
    it (error propagation). Embeddings and lm_head are never pruned. Each decoder layer is moved to
    ``device`` while it is processed and moved back afterwards. The report is JSON-serialisable:
    method, sparsity, prunen, prunem, nsamples, seqlen, per-linear ``layers`` (name, numel, zeros,
    sparsity, damping, recon_error), ``total`` and ``wall_time_s``.
    """
    if method not in PRUNERS:
        raise ValueError(f"unknown pruning method {method!r}; available: {', '.join(sorted(PRUNERS))}")
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.dtype != torch.long:
        raise ValueError("windows must be a 2-D torch.LongTensor (nsamples x seqlen)")
    if windows.shape[0] == 0 or windows.shape[1] == 0:
        raise ValueError(f"windows is empty: shape {tuple(windows.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _check_args(sparsity, prunen, prunem, blocksize, max(prunem, 1))
    prune_fn = PRUNERS[method]
    device = torch.device(device)
    opts = dict(sparsity=sparsity, prunen=prunen, prunem=prunem, blocksize=blocksize, percdamp=percdamp)

    t_start = time.perf_counter()
    layers, path = _layer_list_and_path(model)
    was_training = model.training
    model.eval()  # no dropout in the statistics
    report_layers: list[dict[str, Any]] = []
    try:
        with torch.no_grad():
            batches = _capture(model, layers, windows, batch_size, device)
            log.info(
                "captured %d windows x %d tokens in %d batches; pruning %d decoder layers with %s",
                windows.shape[0], windows.shape[1], len(batches), len(layers), method,
            )
            for index, layer in enumerate(layers):
                t_layer = time.perf_counter()
                layer_name = f"{path}.{index}"
                home = next(layer.parameters()).device
                layer.to(device)
                linears = _linears(layer)
                stats = {name: _Hessian(lin.in_features, device) for name, lin in linears.items()}
                hooks = [lin.register_forward_hook(stats[name].hook) for name, lin in linears.items()]
                try:
                    for batch in batches:
                        _run_layer(layer, batch, index, layer_name)
                finally:
                    for h in hooks:
                        h.remove()

                for name, lin in linears.items():
                    H = stats[name].H
                    full_name = f"{layer_name}.{name}"
                    try:
                        pruned, extra = prune_fn(lin.weight.data, H, **opts)
                    except PruningError as exc:
                        raise PruningError(f"{full_name}: {exc}") from exc
                    entry: dict[str, Any] = {"name": full_name}
                    entry.update(_count(pruned))
                    entry.update(extra)
                    entry["recon_error"] = reconstruction_error(lin.weight.data, pruned, H)
                    lin.weight.data.copy_(pruned)
                    report_layers.append(entry)
                    log.debug(
                        "%s: sparsity %.4f, recon_error %s", full_name, entry["sparsity"], entry["recon_error"]
                    )
                del stats

                # Error propagation: the next layer sees what this pruned layer produces.
                for batch in batches:
                    batch.hidden = _run_layer(layer, batch, index, layer_name)
                layer.to(home)
                log.info(
                    "layer %d/%d pruned in %.1f s", index + 1, len(layers), time.perf_counter() - t_layer
                )
    finally:
        model.train(was_training)

    numel = sum(e["numel"] for e in report_layers)
    zeros = sum(e["zeros"] for e in report_layers)
    return {
        "method": method,
        "sparsity": sparsity,
        "prunen": prunen,
        "prunem": prunem,
        "nsamples": int(windows.shape[0]),
        "seqlen": int(windows.shape[1]),
        "layers": report_layers,
        "total": {"numel": numel, "zeros": zeros, "sparsity": zeros / numel if numel else 0.0},
        "wall_time_s": time.perf_counter() - t_start,
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
