"""One-shot pruning of causal LMs: SparseGPT (Frantar & Alistarh, 2023), Wanda (Sun et al., 2024), magnitude.

SparseGPT (pruning.sparsegpt) follows IST-DASLab/sparsegpt (see docs/reference.md, "SparseGPT") with three deliberate changes:

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
import resource
import sys
import time
from collections.abc import Sequence
from fnmatch import fnmatch
from typing import Any

import torch
from torch import nn

from calmix.core.records import PruneModelReport
from calmix.pruning import registry
from calmix.pruning.capture import (
    Batch,
    Probe,
    capture,
    check_prunable,
    collect,
    in_features,
    layer_list_and_path,
    linears_of,
    probe_layer,
    run_layer,
    set_weight_out_in,
    stage_entries,
    weight_out_in,
)
from calmix.pruning.masks import PruningError, check_args, check_blocksize, count_zeros, nm_valid
from calmix.pruning.statistics import STATISTICS, Statistic, reconstruction_error

log = logging.getLogger(__name__)


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
    batches: list[Batch],
    method: registry.Method,
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
    linears = linears_of(layer)
    kernel = method.kernel()
    skipped = {n for n in linears if any(fnmatch(f"{name}.{n}", p) for p in skip)}
    if method.statistic is None:
        probe = Probe([[n] for n in linears], {}, {}, {}, {})
    else:
        probe = probe_layer(layer, linears, lambda: run_layer(layer, batches[0], index, name))
    leader = {member: group[0] for group in probe.groups for member in group}
    entries: dict[str, dict[str, Any]] = {}

    def report(
        member: str, dense: torch.Tensor, weight: torch.Tensor, hessian: torch.Tensor | None, extra: dict[str, Any]
    ) -> None:
        entry: dict[str, Any] = {"name": f"{name}.{member}", **count_zeros(weight), "skipped": member in skipped}
        entry["target_sparsity"] = None if member in skipped else opts["sparsity"]
        entry["stats_group"] = f"{name}.{leader[member]}" if method.statistic else None
        entry["nm_valid"] = nm_valid(weight, opts["prunen"], opts["prunem"])
        entry["recon_error"] = None if hessian is None else reconstruction_error(dense, weight, hessian)
        entries[member] = {**entry, **extra}

    for member in skipped:
        dense = weight_out_in(linears[member])
        report(member, dense, dense, None, {})
    todo = [group for group in probe.groups if any(m not in skipped for m in group)]
    if true_sequential:
        stages = [[group] for group in todo]
    else:
        stages = [todo] if todo else []
    starts = stage_entries(stages, probe) if method.statistic is not None else []
    recorded: list[tuple[tuple, dict]] = []
    for k, stage in enumerate(stages):
        stats: dict[str, Statistic] = {}
        if method.statistic is not None:
            stats = {g[0]: STATISTICS[method.statistic](in_features(linears[g[0]]), device) for g in stage}
            if k == 0:  # the probe already ran the first batch through the unpruned layer
                for lead, stat in stats.items():
                    for x in probe.inputs.get(lead, ()):
                        stat.add(x)
                probe.inputs.clear()
            # Stop each pass at the stage's last input if every leader runs once per forward.
            last = stage[-1][0]
            once = all(probe.calls.get(g[0]) == 1 for g in stage)
            here, after = starts[k], (starts[k + 1] if k + 1 < len(stages) else None)
            recorded = collect(
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
            # Taken out of the stage's statistics: a group's Hessian goes once the group is pruned
            # (the down projection's, 0.8 GB at 8B, is factorised without the others beside it).
            stat = stats.pop(group[0]).result() if method.statistic is not None else None
            try:
                prepared = kernel.prepare(stat, **opts) if hasattr(kernel, "prepare") else stat
            except PruningError as exc:
                shared = f" (shared by {', '.join(group)})" if len(group) > 1 else ""
                raise PruningError(f"{name}.{group[0]}{shared}: {exc}") from exc
            for member in group:
                if member in skipped:
                    continue
                dense = weight_out_in(linears[member])
                try:
                    pruned, extra = kernel.prune(dense, prepared, **opts)
                except PruningError as exc:
                    raise PruningError(f"{name}.{member}: {exc}") from exc
                report(member, dense, pruned, stat if method.statistic == "hessian" else None, extra)
                set_weight_out_in(linears[member], pruned)
                log.debug("%s.%s: %s", name, member, entries[member])
            del prepared, stat
        del stats
    del recorded, probe

    # Error propagation: the next layer sees what this pruned layer produces.
    for batch in batches:
        batch.hidden.copy_(run_layer(layer, batch, index, name))  # reuse the captured buffers: no heap churn
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
    profile: str = registry.UNIFORM,
    **profile_options: Any,
) -> PruneModelReport:
    """Prune the decoder-layer linears (nn.Linear, transformers' Conv1D) of a Hugging Face causal LM in
    place; return a report. A model whose decoder layers hold weight matrices of any other kind (fused
    expert tensors, convolutions) is refused before any work with :class:`PruningError`, naming it.

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
    match them all, raise :class:`PruningError` before any work. Windows are never padded (calmix
    shards are exact windows). ``profile`` spreads an unstructured target over the decoder layers
    (registry.PROFILES; ``owl`` with ``owl_m`` and ``owl_lmbda``): each layer gets its own sparsity,
    recorded as every linear's target_sparsity, with the mean over the pruned layers equal to ``sparsity``
    (a layer that ``skip`` leaves wholly dense has none); OWL's ``owl_lmbda`` is checked against the
    number of pruned layers before any work (calmix.pruning.registry.owl_extremes).

    Returns the JSON-serialisable report, a calmix.core.records.PruneModelReport: the settings as
    applied, one LayerEntry per linear in module order (its sparsity, target, statistic group, N:M
    validity, reconstruction error from the Hessian, damping or alpha), the totals, the profile's
    per-layer figures, wall time and peak memory ("cuda_max_allocated" since this call started, or
    "process_peak_rss", the process's lifetime peak).
    """
    if method not in registry.METHODS:
        raise ValueError(f"unknown pruning method {method!r}; known methods: {', '.join(registry.METHODS)}")
    if profile not in registry.PROFILES:
        raise ValueError(f"unknown sparsity profile {profile!r}; known profiles: {', '.join(registry.PROFILES)}")
    spec, spread = registry.METHODS[method], registry.PROFILES[profile]
    if spread.module is None and profile_options:
        raise ValueError(f"options {sorted(profile_options)} need a non-uniform sparsity profile")
    if spread.module is not None and prunem:
        raise ValueError(f"sparsity profile {profile!r} spreads an unstructured target; N:M is the same in every layer")
    if windows is None and spec.statistic is not None:
        raise ValueError(f"method {method!r} needs calibration windows")
    if windows is not None and spec.statistic is not None:
        if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.dtype != torch.long:
            raise ValueError("windows must be a 2-D torch.LongTensor (nsamples x seqlen)")
        if windows.shape[0] == 0 or windows.shape[1] == 0:
            raise ValueError(f"windows is empty: shape {tuple(windows.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_args(sparsity, prunen, prunem, max(prunem, 1))
    if method == "sparsegpt":
        check_blocksize(blocksize, prunem)
    cumulative = bool(cumulative) and method == "wanda" and not prunem
    skip = [skip] if isinstance(skip, str) else list(skip)
    device = torch.device(device)
    opts = dict(
        sparsity=sparsity, prunen=prunen, prunem=prunem, blocksize=blocksize, percdamp=percdamp, cumulative=cumulative
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    t_start = time.perf_counter()
    layers, path = layer_list_and_path(model)
    check_prunable(model, layers, path)
    _check_skip(skip, [f"{path}.{index}.{name}" for index, layer in enumerate(layers) for name in linears_of(layer)])
    was_training = model.training
    model.eval()  # no dropout in the statistics
    report_layers: list[dict[str, Any]] = []
    try:
        with torch.no_grad():
            batches = []
            if spec.statistic is not None:
                batches = capture(model, layers, windows, batch_size, device)
                log.info(
                    "captured %d windows x %d tokens in %d batches; pruning %d decoder layers with %s",
                    windows.shape[0], windows.shape[1], len(batches), len(layers), method,
                )
            targets, spread_report = [sparsity] * len(layers), {}
            if spread.module is not None:
                targets, spread_report = spread.kernel().profile(
                    layers, path, batches, device, sparsity, skip=skip, **profile_options
                )
                if batches:  # the profile's pass through the dense layers consumed them
                    batches = capture(model, layers, windows, batch_size, device)
            for index, layer in enumerate(layers):
                t_layer = time.perf_counter()
                home = next(layer.parameters()).device
                layer.to(device)
                try:
                    report_layers += _prune_layer(
                        layer, f"{path}.{index}", index, batches, spec, {**opts, "sparsity": targets[index]}, skip,
                    true_sequential, device,
                    )
                finally:
                    layer.to(home)
                log.info("layer %d/%d pruned in %.1f s", index + 1, len(layers), time.perf_counter() - t_layer)
    finally:
        model.train(was_training)

    numel = sum(e["numel"] for e in report_layers)
    zeros = sum(e["zeros"] for e in report_layers)
    used = spec.statistic is not None
    peak_mb, peak_kind = _peak_memory(device)
    return {
        "method": method,
        "statistic": spec.statistic,
        "sparsity": sparsity,
        "prunen": prunen,
        "prunem": prunem,
        "cumulative": cumulative,
        "profile": {"name": profile, **profile_options, **spread_report},
        "true_sequential": bool(true_sequential),
        "skip": skip,
        "nsamples": int(windows.shape[0]) if used else None,
        "seqlen": int(windows.shape[1]) if used else None,
        "ntokens": int(windows.numel()) if used else None,
        "layers": report_layers,
        "total": {"numel": numel, "zeros": zeros, "sparsity": zeros / numel if numel else 0.0},
        "wall_time_s": time.perf_counter() - t_start,
        "peak_memory_mb": peak_mb,
        "peak_memory_kind": peak_kind,
    }


def model_sparsity(model: nn.Module) -> dict[str, Any]:
    """Fraction of exact zeros in the decoder layers' linear weights (e.g. of a reloaded checkpoint)."""
    layers, path = layer_list_and_path(model)
    per_layer: dict[str, float] = {}
    numel = zeros = 0
    for index, layer in enumerate(layers):
        for name, lin in linears_of(layer).items():
            c = count_zeros(lin.weight.data)
            per_layer[f"{path}.{index}.{name}"] = c["sparsity"]
            numel += c["numel"]
            zeros += c["zeros"]
    return {"numel": numel, "zeros": zeros, "sparsity": zeros / numel if numel else 0.0, "layers": per_layer}

