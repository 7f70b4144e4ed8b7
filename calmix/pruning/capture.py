"""Getting at a model's decoder layers and their inputs: the layer list, the prunable linears and
their weights as (out, in), the recorded arguments of every layer's call, the probe that finds
linears fed the same input, and statistics passes.

The driver records every argument the model passes to each decoder layer (transformers 5 passes rotary
``position_embeddings`` and per-layer-type attention masks), where the reference records only the mask.

A "linear" is an ``nn.Linear`` or transformers' ``Conv1D`` (GPT-2 and its relatives), which computes
x @ W + b with W stored (in, out), the transpose of nn.Linear's. Every kernel prunes the (out, in)
layout (:func:`weight_out_in`): Wanda's comparison groups are output rows and SparseGPT's Hessian is
over the input features, whatever the storage. Decoder weights of any other kind are refused
(:func:`check_prunable`), never silently left dense.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from calmix.pruning.masks import PruningError
from calmix.pruning.statistics import Statistic

log = logging.getLogger(__name__)

# Where the decoder layer list lives, tried in order (attribute paths from the *ForCausalLM model).
_LAYER_PATHS = (
    "model.layers",  # LLaMA, Mistral, Qwen2/3, Gemma, Phi3, ...
    "model.decoder.layers",  # OPT
    "model.language_model.layers",  # multimodal wrappers in transformers 5
    "gpt_neox.layers",  # Pythia
    "transformer.h",  # GPT-2 style (Conv1D)
    "layers",  # a bare decoder model
)

#: The modules whose weights calmix prunes.
PRUNABLE = (nn.Linear, Conv1D)


def layer_list_and_path(model: nn.Module) -> tuple[nn.ModuleList, str]:
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
    return layer_list_and_path(model)[0]


def linears_of(module: nn.Module) -> dict[str, nn.Module]:
    """The prunable linears (nn.Linear, Conv1D) under module, by name, in module order."""
    return {name: m for name, m in module.named_modules() if isinstance(m, PRUNABLE)}


def in_features(linear: nn.Module) -> int:
    return linear.weight.shape[0] if isinstance(linear, Conv1D) else linear.in_features


def weight_out_in(linear: nn.Module) -> torch.Tensor:
    """The weight as (out_features, in_features), the layout every kernel prunes: nn.Linear's own
    tensor, a contiguous transposed copy of a Conv1D's (in, out)."""
    weight = linear.weight.data
    return weight.t().contiguous() if isinstance(linear, Conv1D) else weight


def set_weight_out_in(linear: nn.Module, weight: torch.Tensor) -> None:
    """Write an (out, in) weight back in the linear's own layout."""
    linear.weight.data.copy_(weight.t() if isinstance(linear, Conv1D) else weight)


def model_name(model: nn.Module) -> str:
    """How an error names a model: its class and, where transformers recorded it, where it came from."""
    origin = getattr(getattr(model, "config", None), "name_or_path", "") or ""
    return f"{type(model).__name__}{f' ({origin})' if origin else ''}"


def check_prunable(model: nn.Module, layers: nn.ModuleList, path: str) -> None:
    """Refuse a model whose decoder layers hold weight matrices calmix cannot prune (fused expert
    tensors, convolutions, quantised or custom modules), or no linear at all: such a model would
    come out partly or wholly dense and be evaluated as pruned. Cheap; run before any statistics."""
    alien = [
        f"{path}.{index}.{module_name}{'.' if module_name else ''}{param} ({type(module).__name__})"
        for index, layer in enumerate(layers)
        for module_name, module in layer.named_modules()
        if not isinstance(module, PRUNABLE)
        for param, value in module.named_parameters(recurse=False)
        if value.dim() >= 2
    ]
    if alien:
        raise PruningError(
            f"model {model_name(model)}: its decoder layers hold {len(alien)} weight matrices that are neither "
            f"nn.Linear nor transformers' Conv1D, e.g. {', '.join(alien[:3])}; calmix prunes only those two, so this "
            "model would stay partly dense. Use a model whose decoder layers are built of linear layers"
        )
    if not any(linears_of(layer) for layer in layers):
        raise PruningError(
            f"model {model_name(model)}: its decoder layers ({path}) hold no nn.Linear or Conv1D, so nothing "
            "would be pruned; calmix cannot prune this architecture"
        )


def check_prunable_folder(folder: str | Path) -> None:
    """:func:`check_prunable` on a model folder's config.json alone: the model built on the meta device
    (no weights read or allocated), so a model calmix cannot prune is refused before it is loaded. A
    config transformers cannot build here (custom code) is left to the check on the loaded model."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(folder))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        log.info("%s: no skeleton from config.json (%s); the loaded model is checked instead", folder, exc)
        return
    check_prunable(model, *layer_list_and_path(model))


class StopForward(Exception):
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
            raise StopForward
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
class Batch:
    hidden: torch.Tensor  # input to the layer being processed
    args: list[tuple]  # per decoder layer: extra positional arguments
    kwargs: list[dict[str, Any]]  # per decoder layer: keyword arguments (masks, rotary cos/sin, ...)


@torch.no_grad()
def capture(
    model: nn.Module,
    layers: nn.ModuleList,
    windows: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> list[Batch]:
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
            inputs = {"input_ids": windows[start : start + batch_size].to(device)}
            try:
                model(**inputs, use_cache=False)
            except StopForward:
                pass
            if len(calls) != len(originals) or [c[0] for c in calls] != list(range(len(originals))):
                raise PruningError(
                    f"expected one call of each of the {len(originals)} decoder layers in order, "
                    f"got calls {[c[0] for c in calls]}"
                )
            batches.append(
                Batch(
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


def layer_output(out: Any) -> torch.Tensor:
    # transformers 5 decoder layers return the hidden states; older or other ones a tuple.
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) or hasattr(out, "__getitem__"):
        return out[0]
    raise TypeError(f"unexpected decoder layer output type {type(out).__name__}")


def run_layer(layer: nn.Module, batch: Batch, index: int, name: str) -> torch.Tensor:
    out = layer_output(layer(batch.hidden, *batch.args[index], **batch.kwargs[index]))
    if not torch.isfinite(out).all():
        raise PruningError(f"decoder layer {name} produced NaN/Inf outputs")
    return out


@dataclass
class Probe:
    """What one forward of the unpruned layer on the first batch shows about its structure."""

    groups: list[list[str]]  # linears fed the very same input, in execution order; the leader first
    inputs: dict[str, list[torch.Tensor]]  # linear -> its inputs (the first batch of the statistics)
    calls: dict[str, int]  # module -> calls per forward
    first: dict[str, int]  # module -> position of its first call
    arguments: dict[str, tuple[tuple, dict]]  # linear's parent module -> (args, kwargs) of its call


def probe_layer(layer: nn.Module, linears: dict[str, nn.Module], run: Callable[[], Any]) -> Probe:
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
    return Probe(groups, inputs, calls, first, arguments)


def stage_entries(stages: list[list[list[str]]], probe: Probe) -> list[str | None]:
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


def collect(
    layer: nn.Module, batches: list[Batch], stats: dict[nn.Module, Statistic], index: int, name: str,
    stop_after: nn.Module | None = None,
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
    recorded: list[tuple[tuple, dict]] = []

    def hook(lin: nn.Module, stat: Statistic) -> Callable[..., None]:
        def add(module, args):
            stat.add(args[0])
            if lin is stop_after:
                raise StopForward

        return add

    hooks = [lin.register_forward_pre_hook(hook(lin, stat)) for lin, stat in stats.items()]
    if record is not None:
        hooks.append(record.register_forward_pre_hook(lambda m, a, kw: recorded.append((a, kw)), with_kwargs=True))
    try:
        for i, batch in enumerate(batches):
            try:
                if start is None:
                    layer(batch.hidden, *batch.args[index], **batch.kwargs[index])
                else:
                    args, kwargs = start[1][i]
                    start[0](*args, **kwargs)
            except StopForward:
                continue
    finally:
        for h in hooks:
            h.remove()
    return recorded

