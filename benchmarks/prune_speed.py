#!/usr/bin/env python
"""Speed, peak memory and quality of calmix's SparseGPT against the reference SparseGPT driver.

Both contenders prune the same randomly initialised LLaMA-shaped model (transformers LlamaConfig,
seeded) with the same random calibration windows (seeded):

* ``reference``: the IST-DASLab/sparsegpt driver as described in docs/reference.md ("SparseGPT"),
  written independently here: layer-0 inputs captured one sequence at a time; per decoder layer
  one Hessian per nn.Linear (no sharing between q/k/v or gate/up), accumulated one sequence at a
  time with the running-mean update; the reference column sweep (blocks, per-column k=1 matmul
  update, lazy block update, mask ``score <= threshold``); then the layer is re-run one sequence
  at a time to produce the next layer's inputs. Unlike the original it passes every keyword
  argument the model gives the layers (transformers 5 needs the rotary position embeddings).
* ``calmix``: ``calmix.pruning.driver.prune_model`` with its defaults (``--batch-size`` to override).

Each contender runs in its own subprocess (``--only NAME``), so peak memory does not mix: on CUDA
``torch.cuda.max_memory_allocated``; on CPU ``ru_maxrss``, which also counts the Python/torch
runtime and the model, so the script reports the peak over the RSS measured after imports and the
model build (the "baseline"). The parent process prints the table and the ratios.

    .venv/bin/python benchmarks/prune_speed.py                       # CPU, medium size
    .venv/bin/python benchmarks/prune_speed.py --hidden 128 --layers 2 --intermediate 256 \\
        --heads 4 --nsamples 8 --seqlen 64 --vocab 1000                # tiny smoke run
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import logging
import math
import os
import resource
import subprocess
import sys
import time

import torch
from torch import nn

RESULT_TAG = "BENCH_RESULT "
MB = 2**20
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CONTENDERS = ("reference", "calmix")


# ----------------------------------------------------------------------------------------------
# The workload: same model and windows in every subprocess (rebuilt from the seed)
# ----------------------------------------------------------------------------------------------


def build_workload(args) -> tuple[nn.Module, torch.Tensor]:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads or args.heads,
        max_position_embeddings=max(args.seqlen, 2048),
        tie_word_embeddings=False,
    )
    torch.manual_seed(args.seed)
    # Built directly in the target dtype and on the device it lives on (CPU with --offload), so
    # no float32 copy inflates the memory high-water mark before the contender starts.
    with torch.device(model_home(args)):
        model = LlamaForCausalLM._from_config(config, dtype=DTYPES[args.dtype])
    model.eval()
    gen = torch.Generator().manual_seed(args.seed + 1)
    windows = torch.randint(0, args.vocab, (args.nsamples, args.seqlen), generator=gen)
    return model, windows


def model_home(args) -> torch.device:
    return torch.device("cpu") if args.offload else torch.device(args.device)


def fingerprint(model: nn.Module, windows: torch.Tensor) -> str:
    """Cheap checksum so the parent can check both contenders got the same model and windows."""
    total = sum(p.detach().double().abs().sum().item() for p in model.parameters())
    return f"{total:.6e}/{int(windows.sum())}"


def linears(module: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear)}


def memory_bound(model: nn.Module, args) -> dict[str, float]:
    """The bound the issue asks about: weights + one layer's activation buffers + its Hessians, +25%."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    activations = 2 * args.nsamples * args.seqlen * args.hidden * 4  # inputs and outputs, 4 B each
    hessians = sum(lin.in_features**2 * 4 for lin in linears(model.model.layers[0]).values())
    return {
        "weights_mb": weights / MB,
        "activations_mb": activations / MB,
        "hessians_mb": hessians / MB,
        "bound_mb": 1.25 * (weights + activations + hessians) / MB,
    }


def model_zeros(model: nn.Module) -> tuple[int, int]:
    numel = zeros = 0
    for layer in model.model.layers:
        for lin in linears(layer).values():
            numel += lin.weight.numel()
            zeros += int((lin.weight == 0).sum())
    return zeros, numel


def recon_error(weight: torch.Tensor, pruned: torch.Tensor, H: torch.Tensor) -> float | None:
    """Relative output error ||(W - W')X||^2 / ||WX||^2 = tr(D H D^T) / tr(W H W^T), D = W - W'."""
    W = weight.float()
    D = W - pruned.float()
    den = torch.sum((W @ H) * W).item()
    return torch.sum((D @ H) * D).item() / den if den > 0 else None


# ----------------------------------------------------------------------------------------------
# Contender 1: the reference driver (IST-DASLab/sparsegpt), written from docs/reference.md
# ----------------------------------------------------------------------------------------------


class _Stop(Exception):
    pass


class Catcher(nn.Module):
    """Stands in for layer 0: stores the hidden states and keyword arguments, then stops the model."""

    def __init__(self, inps: torch.Tensor, cache: dict):
        super().__init__()
        self.inps, self.cache = inps, cache

    def forward(self, hidden, **kwargs):
        self.inps[self.cache["i"]] = hidden[0]
        self.cache["i"] += 1
        kwargs.update(past_key_values=None, use_cache=False)  # layers must run stateless
        self.cache["kwargs"] = kwargs
        raise _Stop


@torch.no_grad()
def capture_layer0_inputs(model: nn.Module, windows: torch.Tensor, dev: torch.device):
    inner = model.model
    home = inner.embed_tokens.weight.device
    dtype = inner.embed_tokens.weight.dtype
    for m in (inner.embed_tokens, inner.rotary_emb, inner.norm):
        m.to(dev)
    inps = torch.zeros(windows.shape[0], windows.shape[1], inner.config.hidden_size, dtype=dtype, device=dev)
    cache = {"i": 0, "kwargs": None}
    first = inner.layers[0]
    inner.layers[0] = Catcher(inps, cache)
    try:
        for j in range(windows.shape[0]):  # one sequence at a time, as the reference's dataloader
            try:
                model(windows[j : j + 1].to(dev), use_cache=False)
            except _Stop:
                pass
    finally:
        inner.layers[0] = first
        for m in (inner.embed_tokens, inner.rotary_emb, inner.norm):
            m.to(home)
    return inps, cache["kwargs"]


class RunningHessian:
    """H = 2/n * sum over sequences of X X^T, updated one sequence at a time (reference add_batch)."""

    def __init__(self, columns: int, dev: torch.device):
        self.H = torch.zeros(columns, columns, dtype=torch.float32, device=dev)
        self.n = 0

    def add(self, inp: torch.Tensor) -> None:
        x = inp.reshape(-1, inp.shape[-1]).t()
        self.H *= self.n / (self.n + 1)
        self.n += 1
        x = math.sqrt(2 / self.n) * x.float()
        self.H += x.matmul(x.t())


def run_layer(layer, inps, outs, kwargs, hessians: dict[str, RunningHessian] | None = None) -> None:
    """outs[j] = layer(inps[j]) one sequence at a time; optionally feed each linear's Hessian."""
    hooks = []
    for name, lin in linears(layer).items():
        if hessians is not None and name in hessians:
            hooks.append(lin.register_forward_hook(lambda m, i, o, h=hessians[name]: h.add(i[0].data)))
    try:
        for j in range(inps.shape[0]):
            out = layer(inps[j].unsqueeze(0), **kwargs)
            outs[j] = (out[0] if isinstance(out, tuple) else out)[0]
    finally:
        for h in hooks:
            h.remove()


def reference_sparsegpt(weight, hessian, sparsity, prunen=0, prunem=0, blocksize=128, percdamp=0.01):
    """The reference column sweep (fasterprune); returns the pruned weight in weight's dtype."""
    W = weight.clone().float()
    H = hessian.clone()  # the undamped Hessian is kept to measure the error (calmix keeps it too)
    rows, columns = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    diag = torch.arange(columns, device=H.device)
    H[diag, diag] += percdamp * torch.mean(torch.diag(H))
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)
    del H
    losses = torch.zeros(rows, device=W.device)

    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        if prunem == 0:
            score = W1**2 / torch.diag(Hinv1).reshape(1, -1) ** 2
            thresh = torch.sort(score.flatten())[0][int(score.numel() * sparsity)]
            mask1 = score <= thresh
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            w = W1[:, i]
            d = Hinv1[i, i]
            if prunem and i % prunem == 0:
                score = W1[:, i : i + prunem] ** 2 / torch.diag(Hinv1)[i : i + prunem].reshape(1, -1) ** 2
                mask1.scatter_(1, i + torch.topk(score, prunen, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d**2
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        losses += torch.sum(Losses1, 1) / 2
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W.to(weight.dtype)


#: The reference's --true-sequential groups for LLaMA, in order: each is calibrated after the ones before are pruned.
TRUE_SEQUENTIAL = [
    ["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"],
    ["self_attn.o_proj"],
    ["mlp.up_proj", "mlp.gate_proj"],
    ["mlp.down_proj"],
]


@torch.no_grad()
def reference_prune(model: nn.Module, windows: torch.Tensor, args) -> list[float | None]:
    """The reference sequential driver; prunes in place, returns each linear's recon error
    (in module order). With --true-sequential one full pass over the samples per group."""
    dev = torch.device(args.device)
    inps, kwargs = capture_layer0_inputs(model, windows, dev)
    outs = torch.zeros_like(inps)
    errors = []
    for layer in model.model.layers:
        home = next(layer.parameters()).device
        layer.to(dev)
        subset = linears(layer)
        stages = TRUE_SEQUENTIAL if args.true_sequential else [list(subset)]
        layer_errors = {}
        for names in stages:
            hessians = {name: RunningHessian(subset[name].in_features, dev) for name in names}
            run_layer(layer, inps, outs, kwargs, hessians)
            for name in names:
                lin, H = subset[name], hessians[name].H
                pruned = reference_sparsegpt(
                    lin.weight.data, H, args.sparsity, args.prunen, args.prunem, args.blocksize, args.percdamp
                )
                layer_errors[name] = recon_error(lin.weight.data, pruned, H)
                lin.weight.data = pruned
            del hessians
        errors += [layer_errors[name] for name in subset]
        run_layer(layer, inps, outs, kwargs)  # the next layer sees the pruned layer's outputs
        layer.to(home)
        inps, outs = outs, inps
    return errors


@torch.no_grad()
def layerwise_recon_errors(dense: nn.Module, pruned: nn.Module, windows: torch.Tensor, args) -> list:
    """Recompute calmix's per-linear errors when its report has none: layer i's Hessians come from
    the dense layer i fed with the outputs of the pruned layers < i (what calmix calibrated on)."""
    dev = torch.device(args.device)
    inps, kwargs = capture_layer0_inputs(dense, windows, dev)  # embeddings are not pruned
    outs = torch.zeros_like(inps)
    errors = []
    for d_layer, p_layer in zip(dense.model.layers, pruned.model.layers):
        d_layer.to(dev)
        p_layer.to(dev)
        d_lin, p_lin = linears(d_layer), linears(p_layer)
        hessians = {name: RunningHessian(lin.in_features, dev) for name, lin in d_lin.items()}
        run_layer(d_layer, inps, outs, kwargs, hessians)
        errors += [recon_error(d_lin[n].weight, p_lin[n].weight, hessians[n].H) for n in d_lin]
        run_layer(p_layer, inps, outs, kwargs)
        inps, outs = outs, inps
    return errors


# ----------------------------------------------------------------------------------------------
# Contender 2: calmix
# ----------------------------------------------------------------------------------------------


def calmix_prune(model: nn.Module, windows: torch.Tensor, args) -> dict:
    from calmix.pruning.driver import prune_model

    kwargs = dict(
        method=args.method, prunen=args.prunen, prunem=args.prunem, blocksize=args.blocksize,
        percdamp=args.percdamp, device=args.device, true_sequential=args.true_sequential,
    )
    if args.batch_size:
        kwargs["batch_size"] = args.batch_size
    return prune_model(model, windows, args.sparsity, **kwargs)


def calmix_batch_size(args) -> int | None:
    if args.batch_size:
        return args.batch_size
    from calmix.pruning.driver import prune_model

    default = inspect.signature(prune_model).parameters.get("batch_size")
    return None if default is None else default.default


# ----------------------------------------------------------------------------------------------
# One contender in this process (--only NAME): print one JSON line
# ----------------------------------------------------------------------------------------------


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


@torch.no_grad()
def warm_up(model: nn.Module, windows: torch.Tensor, args) -> None:
    """Fault in the runtime's lazy one-off allocations (kernels, thread pools, BLAS/LAPACK
    workspaces) before the baseline, so "over baseline" is the contender's working memory."""
    dev = torch.device(args.device)
    layer = model.model.layers[0]
    home = next(layer.parameters()).device
    inps, kwargs = capture_layer0_inputs(model, windows[:1, : min(16, windows.shape[1])], dev)
    layer.to(dev)
    run_layer(layer, inps, torch.zeros_like(inps), kwargs)
    layer.to(home)
    x = torch.randn(64, 64, device=dev)
    torch.linalg.cholesky(x @ x.t() + 64 * torch.eye(64, device=dev))


def run_contender(name: str, args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.keep_malloc:
        from calmix.core.devices import return_freed_memory_to_os

        return_freed_memory_to_os()  # for both contenders, as the prune rule does
    cuda = torch.device(args.device).type == "cuda"
    if name == "calmix":
        import calmix.pruning.driver  # noqa: F401  (import cost belongs to the baseline)
    model, windows = build_workload(args)
    result = {"contender": name, "fingerprint": fingerprint(model, windows), **memory_bound(model, args)}
    warm_up(model, windows, args)
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline, baseline_hwm = current_rss(), max_rss()

    t0 = time.perf_counter()
    if name == "reference":
        errors = reference_prune(model, windows, args)
        report = None
    else:
        report = calmix_prune(model, windows, args)
        errors = [e.get("recon_error") for e in report.get("layers", [])]
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0

    if cuda:
        peak = torch.cuda.max_memory_allocated()
        result["peak_reserved_mb"] = torch.cuda.max_memory_reserved() / MB
    else:
        peak = max_rss()
        # ru_maxrss never goes down: if the build had a higher mark, the contender's peak is hidden.
        result["peak_hidden_by_build"] = peak <= baseline_hwm
    result.update(wall_s=wall, peak_mb=peak / MB, baseline_mb=baseline / MB, working_mb=(peak - baseline) / MB)
    if report is not None and report.get("peak_memory_mb") is not None:
        result["reported_peak_mb"] = report["peak_memory_mb"]

    result["recon_source"] = "in-loop" if name == "reference" else "calmix report"
    if name == "calmix" and (args.recompute_recon or not errors or any(e is None for e in errors)):
        reported = errors
        dense, _ = build_workload(args)
        errors = layerwise_recon_errors(dense, model, windows, args)
        result["recon_source"] = "recomputed"
        if reported and all(e is not None for e in reported):
            result["recon_error_reported"] = sum(reported) / len(reported)
        del dense
    valid = [e for e in errors if e is not None]
    result["recon_error"] = sum(valid) / len(valid) if valid else float("nan")
    result["n_linears"] = len(errors)
    zeros, numel = model_zeros(model)
    result["sparsity"] = zeros / numel
    result["zeros"] = zeros
    return result


# ----------------------------------------------------------------------------------------------
# Parent: run each contender in a subprocess, print the table and the ratios
# ----------------------------------------------------------------------------------------------


def run_subprocess(name: str) -> dict:
    argv = [a for a in sys.argv[1:]]
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--only", name]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # stderr (logs) passes through
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        sys.stdout.write(proc.stdout)
        sys.exit(f"contender {name!r} failed (exit {proc.returncode}): {' '.join(cmd)}")
    return json.loads(lines[-1][len(RESULT_TAG):])


def print_report(args, results: dict[str, dict]) -> None:
    cuda = torch.device(args.device).type == "cuda"
    kv = args.kv_heads or args.heads
    prune = f"{args.prunen}:{args.prunem}" if args.prunem else f"{args.sparsity:.0%} unstructured"
    where = f"{args.device}" + (" (model offloaded to CPU, one layer at a time on the device)" if args.offload else "")
    print(
        f"LLaMA-shaped model: hidden {args.hidden}, intermediate {args.intermediate}, {args.layers} layers, "
        f"{args.heads} heads ({kv} KV), vocab {args.vocab}, {args.dtype} on {where}, seed {args.seed}"
    )
    print(
        f"calibration: {args.nsamples} x {args.seqlen} random tokens; {args.method} {prune}, block {args.blocksize}, "
        f"damping {args.percdamp}{', true-sequential' if args.true_sequential else ''}; calmix batch_size {calmix_batch_size(args)}; "
        f"torch threads {args.threads or torch.get_num_threads()}"
    )
    mem = "CUDA max_memory_allocated" if cuda else "ru_maxrss of the contender's process"
    print(f"peak = {mem}; over baseline = peak minus what was held after imports, model build and warm-up\n")

    head = f"{'contender':<10} {'wall s':>9} {'s/layer':>9} {'peak MB':>10} {'over base MB':>13} {'recon err':>11} {'sparsity':>9}"
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        print(
            f"{name:<10} {r['wall_s']:>9.2f} {r['wall_s'] / args.layers:>9.3f} {r['peak_mb']:>10.1f} "
            f"{r['working_mb']:>13.1f} {r['recon_error']:>11.4e} {r['sparsity']:>9.4f}"
        )
    for name, r in results.items():
        if r.get("peak_hidden_by_build"):
            print(f"warning: {name}: the RSS high-water mark was set during the model build; its peak is hidden")
        if r.get("recon_source") == "recomputed":
            print(f"note: {name}: recon error recomputed layer by layer (report had none or --recompute-recon)"
                  + (f"; report says {r['recon_error_reported']:.4e}" if "recon_error_reported" in r else ""))
        if "reported_peak_mb" in r:
            print(f"note: {name}: report's own peak_memory_mb = {r['reported_peak_mb']:.1f}")
    print()

    if len(results) == 2:
        ref, cal = results["reference"], results["calmix"]
        if ref["fingerprint"] != cal["fingerprint"]:
            sys.exit(f"the contenders saw different models/windows: {ref['fingerprint']} vs {cal['fingerprint']}")
        print(f"speedup (reference time / calmix time): {ref['wall_s'] / cal['wall_s']:.2f}x")
        print(
            f"memory ratio (calmix / reference, peak over baseline): {cal['working_mb'] / ref['working_mb']:.2f}x"
            if ref["working_mb"] > 0 else "memory ratio: n/a (reference used no memory over baseline)"
        )
        print(f"memory ratio (calmix / reference, absolute peak): {cal['peak_mb'] / ref['peak_mb']:.2f}x")
        print(f"recon error calmix / reference: {cal['recon_error'] / ref['recon_error']:.3f}x")
        print(f"sparsity calmix - reference: {cal['sparsity'] - ref['sparsity']:+.5f} "
              f"({cal['zeros'] - ref['zeros']:+d} zeros)")
        print()

    b = next(iter(results.values()))
    resident = 0.0 if (cuda and args.offload) else b["weights_mb"]
    print(
        f"memory bound: 1.25 x (weights {b['weights_mb']:.1f} MB + activations 2 x {args.nsamples} x {args.seqlen} x "
        f"{args.hidden} x 4 B = {b['activations_mb']:.1f} MB + one layer's Hessians {b['hessians_mb']:.1f} MB) "
        f"= {b['bound_mb']:.1f} MB"
    )
    if "calmix" in results:
        cal = results["calmix"]
        allowed = b["bound_mb"] - resident
        verdict = "below" if cal["working_mb"] <= allowed else "ABOVE"
        what = "weights on the device" if cuda and not args.offload else (
            "nothing (model offloaded to CPU)" if cuda else "runtime + weights")
        print(
            f"calmix peak over baseline {cal['working_mb']:.1f} MB vs bound minus resident weights "
            f"{allowed:.1f} MB: {verdict} the bound (baseline {cal['baseline_mb']:.1f} MB = {what}; "
            f"absolute peak {cal['peak_mb']:.1f} MB vs bound {b['bound_mb']:.1f} MB)"
        )
        if not cuda and allowed < 64:
            print("(too small to judge: allocator and runtime noise on CPU is several MB; use real sizes)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model (random init, LlamaConfig)")
    g.add_argument("--hidden", type=int, default=1024)
    g.add_argument("--intermediate", type=int, default=2816)
    g.add_argument("--layers", type=int, default=8)
    g.add_argument("--heads", type=int, default=16)
    g.add_argument("--kv-heads", type=int, default=0, help="key/value heads (0: same as --heads)")
    g.add_argument("--vocab", type=int, default=32000)
    g.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    g = p.add_argument_group("calibration and pruning")
    g.add_argument("--nsamples", type=int, default=128)
    g.add_argument("--seqlen", type=int, default=512)
    g.add_argument("--method", default="sparsegpt", help="calmix method; the reference is SparseGPT only")
    g.add_argument("--sparsity", type=float, default=0.5)
    g.add_argument("--prunen", type=int, default=0)
    g.add_argument("--prunem", type=int, default=0)
    g.add_argument("--blocksize", type=int, default=128)
    g.add_argument("--percdamp", type=float, default=0.01)
    g.add_argument("--true-sequential", action="store_true",
                   help="both contenders calibrate each group of a layer after pruning the groups before it")
    g.add_argument("--batch-size", type=int, default=0, help="calmix batch_size (0: prune_model's default)")
    g = p.add_argument_group("run")
    g.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    g.add_argument("--offload", action="store_true", help="keep the model on the CPU, one layer at a time on --device")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--keep-malloc", action="store_true",
                   help="leave glibc's dynamic mmap threshold on (both contenders); by default it is fixed, as in the prune rule")
    g.add_argument("--only", choices=CONTENDERS, help="run one contender in this process and print a JSON line")
    g.add_argument("--recompute-recon", action="store_true",
                   help="recompute calmix's recon error layer by layer even if its report has it (a check)")
    g.add_argument("--verbose", action="store_true", help="show calmix's INFO logs")
    args = p.parse_args(argv)
    if not 0 <= args.sparsity < 1:
        p.error("--sparsity must be in [0, 1)")
    if args.only == "reference" and args.method != "sparsegpt":
        p.error("the reference contender implements --method sparsegpt only")
    if args.recompute_recon and args.true_sequential:
        p.error("--recompute-recon rebuilds Hessians from the dense layer, which is not what --true-sequential calibrates on")
    return args


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if args.only:
        print(RESULT_TAG + json.dumps(run_contender(args.only, args)), flush=True)
        return 0
    names = CONTENDERS if args.method == "sparsegpt" else ("calmix",)
    if len(names) == 1:
        print(f"note: the reference implements sparsegpt only; running calmix --method {args.method} alone\n")
    results = {name: run_subprocess(name) for name in names}
    print_report(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
