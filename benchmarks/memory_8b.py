#!/usr/bin/env python
"""Peak memory of calmix's model-facing stages at Llama-3.1-8B's widths: metrics, pruning, evaluation.

One randomly initialised LlamaForCausalLM (transformers LlamaConfig; a seeded block of random values
tiled over every matrix) with Llama-3.1-8B's shapes (hidden 4096, intermediate 14336, 32 heads, 8 KV
heads, vocabulary 128,256, untied head) but ``--layers`` (2) decoder layers, and random token windows
(seeded). Each phase runs in a fresh
subprocess (``--only PHASE``), so peaks never mix; on CUDA ``torch.cuda.max_memory_allocated``, on
CPU the process's ``ru_maxrss``; "working" is the peak minus what the process held after imports,
the model build and a small warm-up (the "baseline": runtime and weights).

* ``metrics-before``: the old ``token_nll`` (kept below as ``old_token_nll``): the batch's logits
  upcast to float64 in one piece, then cross-entropy over them.
* ``metrics-after``: ``calmix.calibration.likelihood.token_nll``, the OIT metrics' and self-generated
  candidates' scorer, at ``--metrics-batch`` (config ``calibration.metrics_batch_size``).
* ``prune``: ``calmix.pruning.driver.prune_model``, SparseGPT 60% over the decoder layers at the paper
  config's ``pruning.batch_size`` 8 with ``--prune-nsamples`` windows.
* ``eval``: lm-eval's ``HFLM._loglikelihood_tokens`` (what calmix's harness runs for multiple-choice
  and perplexity tasks) on ``--eval-batch`` requests of ``--eval-len`` tokens: one forward pass and
  ``log_softmax`` over the padded batch, in the model's dtype.

Each phase is printed against its bound, by arithmetic (b = bytes per element of the dtype, B the
batch, S the tokens per row, V the vocabulary, H hidden, I intermediate): one decoder layer's
transients act(B, S) = B S (3 I b + 8 H 4) (gate, up and activation; hidden-width tensors and
RMSNorm's float32 copies); metrics 1.25 (B S V b + 2 x 2^24 x 8 + act); the old path B S V (b + 3 x 8)
+ act (its float64 copy, cross-entropy's contiguous copy and its log-softmax); pruning 1.25 (2 n S H 4
+ the layer's Hessians sum in^2 4 + act(8, S) + SparseGPT's float32 copies of the largest weight and
inverse Hessian); evaluation 1.25 (2 B S V b + act). Last, the same bounds at the paper's full sizes
(32 layers, 128 x 2048 calibration, metrics batch 16, lm-eval batch 16 x 2048) with the weights.

    .venv/bin/python benchmarks/memory_8b.py                 # CPU, float32, sized for 2 cores (minutes)
    .venv/bin/python benchmarks/memory_8b.py --device cuda   # GPU, bfloat16, the paper's batch sizes
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

RESULT_TAG = "BENCH_RESULT "
MB, GB = 2**20, 1e9
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PHASES = ("metrics-before", "metrics-after", "prune", "eval")
SHAPE = {"hidden": 4096, "intermediate": 14336, "heads": 32, "kv_heads": 8, "vocab": 128256}
FULL = {"layers": 32, "seqlen": 2048, "metrics_batch": 16, "prune_nsamples": 128, "prune_batch": 8,
        "eval_batch": 16, "eval_len": 2048}  # experiments/paper-llama3.1-8b.yaml and calmix's defaults
SPARSITY = 0.6


# ----------------------------------------------------------------------------------------------
# The workload: the same model and windows in every subprocess (rebuilt from the seed)
# ----------------------------------------------------------------------------------------------


def build_model(args):
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.initialization import no_init_weights

    config = LlamaConfig(
        vocab_size=SHAPE["vocab"], hidden_size=SHAPE["hidden"], intermediate_size=SHAPE["intermediate"],
        num_hidden_layers=args.layers, num_attention_heads=SHAPE["heads"], num_key_value_heads=SHAPE["kv_heads"],
        max_position_embeddings=max(args.seqlen, args.eval_len, 2048), tie_word_embeddings=False,
    )
    with torch.device(args.device), no_init_weights():  # in its dtype where it lives: no float32 copy raises the peak
        model = LlamaForCausalLM._from_config(config, dtype=DTYPES[args.dtype])
    # A seeded block of N(0, 0.02^2) values tiled over every matrix: a full random init of 1.5 G values
    # takes most of a minute per process on 2 cores. The block's odd length keeps rows from repeating
    # in step; the RMSNorm weights stay ones.
    block = (0.02 * torch.randn(2**20 + 7, generator=torch.Generator().manual_seed(args.seed))).to(args.device)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                flat = param.view(-1)
                for start in range(0, flat.numel(), block.numel()):
                    part = flat[start:start + block.numel()]
                    part.copy_(block[:part.numel()])
    return model.eval()


def windows(n: int, seqlen: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, SHAPE["vocab"], size=(n, seqlen), dtype=np.int64)


def old_token_nll(model, windows: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """calmix's token_nll before the fix (commit 67d0efb's calmix/calibration/likelihood.py), verbatim."""
    out = []
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            x = torch.from_numpy(windows[start:start + batch_size].astype(np.int64)).to(model.device)
            logits = model(input_ids=x, use_cache=False).logits.double()
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none")
            out.append(nll.cpu().numpy())
    return np.concatenate(out)


def word_tokenizer():
    """A tokenizer with the model's 128,256 ids (lm-eval reads its vocabulary size and special tokens)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(SHAPE["vocab"])}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")),
                                   bos_token="t1", eos_token="t2", pad_token="t2")


# ----------------------------------------------------------------------------------------------
# Bounds, by arithmetic
# ----------------------------------------------------------------------------------------------


def weight_bytes(layers: int, b: int) -> int:
    h, i, v, kv = SHAPE["hidden"], SHAPE["intermediate"], SHAPE["vocab"], SHAPE["kv_heads"]
    head_dim = h // SHAPE["heads"]
    layer = h * h * 2 + 2 * h * kv * head_dim + 3 * h * i + 2 * h  # q, o; k, v; gate, up, down; 2 norms
    return (layers * layer + 2 * v * h + h) * b  # embedding, untied head, final norm


def act(batch: int, tokens: int, b: int) -> int:
    return batch * tokens * (3 * SHAPE["intermediate"] * b + 8 * SHAPE["hidden"] * 4)


def bounds(b: int, *, seqlen: int, metrics_batch: int, prune_nsamples: int, prune_batch: int, eval_batch: int,
           eval_len: int) -> dict[str, dict[str, float]]:
    """Working memory (over runtime and weights) of each phase: its terms in bytes and the bound."""
    from calmix.calibration.likelihood import CHUNK_LOGITS

    v, h, i = SHAPE["vocab"], SHAPE["hidden"], SHAPE["intermediate"]
    bs = metrics_batch
    hessians = (4 * h * h + i * i) * 4  # q/k/v share one input, o, gate/up share one, down
    terms = {
        "metrics-before": {"logits": bs * seqlen * v * b, "float64 copy, contiguous copy, log-softmax": 3 * bs * seqlen * v * 8,
                           "layer transients": act(bs, seqlen, b)},
        "metrics-after": {"logits": bs * seqlen * v * b, "float64 chunk and its log-softmax": 2 * CHUNK_LOGITS * 8,
                          "layer transients": act(bs, seqlen, b)},
        "prune": {"layer inputs and outputs": 2 * prune_nsamples * seqlen * h * 4, "Hessians": hessians,
                  "layer transients": act(min(prune_batch, prune_nsamples), seqlen, b),
                  "SparseGPT float32 weight and inverse": (h * i + i * i) * 4},
        "eval": {"logits and log-softmax": 2 * eval_batch * eval_len * v * b, "layer transients": act(eval_batch, eval_len, b)},
    }
    out = {}
    for phase, parts in terms.items():
        slack = 1.0 if phase == "metrics-before" else 1.25  # the old path's is an estimate, not a bound to meet
        out[phase] = {"terms": parts, "bound": slack * sum(parts.values())}
    return out


def phase_sizes(args) -> dict:
    return dict(seqlen=args.seqlen, metrics_batch=min(args.metrics_batch, args.metrics_windows),
                prune_nsamples=args.prune_nsamples, prune_batch=args.prune_batch, eval_batch=args.eval_batch,
                eval_len=args.eval_len)


# ----------------------------------------------------------------------------------------------
# One phase in this process (--only PHASE): print one JSON line
# ----------------------------------------------------------------------------------------------


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


def run_phase(phase: str, args) -> dict:
    from calmix.calibration.likelihood import token_nll
    from calmix.core.devices import return_freed_memory_to_os
    from calmix.pruning.driver import prune_model

    return_freed_memory_to_os()  # as the workflow's jobs do: RSS is what is in use
    cuda = torch.device(args.device).type == "cuda"
    model = build_model(args)
    with torch.no_grad():  # warm-up: kernels, thread pools, LAPACK, allocator, at a few tokens
        token_nll(model, windows(1, 16, args.seed), 1)
        x = torch.randn(64, 64, device=args.device)
        torch.linalg.cholesky(x @ x.t() + 64 * torch.eye(64, device=args.device))
    result: dict = {"phase": phase}
    if phase == "eval":
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=model, tokenizer=word_tokenizer(), batch_size=args.eval_batch)
        rows = windows(args.eval_batch, args.eval_len + 1, args.seed + 3).tolist()
        requests = [(("", ""), row[:-8], row[-8:]) for row in rows]  # 8-token continuations
        lm._loglikelihood_tokens(requests[:1], disable_tqdm=True)  # warm-up
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline, baseline_hwm = current_rss(), max_rss()

    t0 = time.perf_counter()
    if phase.startswith("metrics"):
        score = old_token_nll if phase == "metrics-before" else token_nll
        nll = score(model, windows(args.metrics_windows, args.seqlen, args.seed + 1), args.metrics_batch)
        np.save(args.out, nll)
    elif phase == "prune":
        calib = torch.from_numpy(windows(args.prune_nsamples, args.seqlen, args.seed + 2))
        skip = [f"model.layers.{i}.*" for i in range(args.prune_layers, args.layers)]  # left dense
        report = prune_model(model, calib, SPARSITY, method="sparsegpt", batch_size=args.prune_batch,
                             device=args.device, skip=skip)
        result["sparsity"] = report["total"]["sparsity"]
    else:
        result["loglikelihood_sum"] = sum(ll for ll, _ in lm._loglikelihood_tokens(requests, disable_tqdm=True))
    if cuda:
        torch.cuda.synchronize()
    result["wall_s"] = time.perf_counter() - t0
    if cuda:
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = max_rss()
        result["peak_hidden_by_build"] = peak <= baseline_hwm  # ru_maxrss never goes down
    result.update(peak_mb=peak / MB, baseline_mb=baseline / MB, working_mb=(peak - baseline) / MB)
    return result


# ----------------------------------------------------------------------------------------------
# Parent: each phase in a subprocess, then the table
# ----------------------------------------------------------------------------------------------


def run_subprocess(phase: str, out: str) -> dict:
    argv = [a for a in sys.argv[1:]]
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--only", phase, "--out", out]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # stderr (logs) passes through
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        sys.stdout.write(proc.stdout)
        sys.exit(f"phase {phase!r} failed (exit {proc.returncode}): {' '.join(cmd)}")
    return json.loads(lines[-1][len(RESULT_TAG):])


def print_report(args, results: dict[str, dict], nll_diff: float | None, nll_equal: bool | None) -> None:
    b = torch.empty((), dtype=DTYPES[args.dtype]).element_size()
    cuda = torch.device(args.device).type == "cuda"
    here = bounds(b, **phase_sizes(args))
    print(f"Llama-3.1-8B widths (hidden {SHAPE['hidden']}, intermediate {SHAPE['intermediate']}, {SHAPE['heads']} heads, "
          f"{SHAPE['kv_heads']} KV, vocab {SHAPE['vocab']:,}), {args.layers} layers, {args.dtype} on {args.device}, seed "
          f"{args.seed}; weights {weight_bytes(args.layers, b) / GB:.2f} GB")
    print(f"metrics: {args.metrics_windows} x {args.seqlen} tokens, batch {args.metrics_batch}; prune: SparseGPT "
          f"{SPARSITY:.0%} of {args.prune_layers} of {args.layers} layers, {args.prune_nsamples} x {args.seqlen}, "
          f"batch {args.prune_batch}; eval: lm-eval HFLM "
          f"loglikelihood, {args.eval_batch} x {args.eval_len} tokens, batch {args.eval_batch}")
    mem = "CUDA max_memory_allocated" if cuda else "ru_maxrss of the phase's process"
    print(f"peak = {mem}; working = peak minus the baseline (runtime and weights, after a warm-up)\n")
    head = f"{'phase':<15} {'wall s':>8} {'peak GB':>9} {'working GB':>11} {'bound GB':>9}  verdict"
    print(head)
    print("-" * len(head))
    for phase, r in results.items():
        bound = here[phase]["bound"] / GB
        working = r["working_mb"] * MB / GB
        verdict = ("estimate of the old path" if phase == "metrics-before"
                   else "within the bound" if working <= bound else "ABOVE the bound")
        if r.get("peak_hidden_by_build"):
            verdict += " (peak hidden by the model build)"
        print(f"{phase:<15} {r['wall_s']:>8.1f} {r['peak_mb'] * MB / GB:>9.2f} {working:>11.2f} {bound:>9.2f}  {verdict}")
    print()
    for phase, spec in here.items():
        if phase in results:
            terms = ", ".join(f"{k} {v / GB:.2f}" for k, v in spec["terms"].items())
            print(f"  {phase}: {terms} GB")
    if "metrics-before" in results and "metrics-after" in results:
        before, after = results["metrics-before"], results["metrics-after"]
        print(f"\nmetrics memory ratio (after / before, working): {after['working_mb'] / before['working_mb']:.3f}x; "
              f"time ratio (before / after): {before['wall_s'] / after['wall_s']:.2f}x")
        print(f"per-token NLL, after vs before: max |difference| {nll_diff:.3g}, byte-identical: {nll_equal}")

    print(f"\nat the paper's full sizes ({FULL['layers']} layers, bfloat16: weights "
          f"{weight_bytes(FULL['layers'], 2) / GB:.2f} GB), weights + bound:")
    full = bounds(2, **{k: FULL[k] for k in ("seqlen", "metrics_batch", "prune_nsamples", "prune_batch", "eval_batch", "eval_len")})
    for phase, spec in full.items():
        total = (weight_bytes(FULL["layers"], 2) + spec["bound"]) / GB
        what = "old path, estimate" if phase == "metrics-before" else "bound"
        print(f"  {phase:<15} {total:>7.1f} GB ({what}; H100: 80 GB)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="default: bfloat16 on cuda (the paper's), float32 on cpu "
                   "(bfloat16 matmuls without AVX512-BF16/AMX run at well under 1 GFLOP/s)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seqlen", type=int, help="metrics and calibration window (default: 2048 on cuda, 1024 on cpu)")
    p.add_argument("--metrics-windows", type=int, help="windows scored (default: 32 on cuda, 2 on cpu)")
    p.add_argument("--metrics-batch", type=int, help="calibration.metrics_batch_size (default: 16 on cuda, 1 on cpu)")
    p.add_argument("--prune-nsamples", type=int, help="calibration windows (default: 16 on cuda, 2 on cpu; the paper: 128)")
    p.add_argument("--prune-batch", type=int, default=8, help="pruning.batch_size (the paper config's)")
    p.add_argument("--prune-layers", type=int, help="decoder layers pruned, the rest left dense (default: all on cuda, "
                   "1 on cpu: every layer peaks alike, and SparseGPT's 14336-column sweep is minutes a layer on 2 cores)")
    p.add_argument("--eval-batch", type=int, default=16, help="evaluation.batch_size (the paper config's)")
    p.add_argument("--eval-len", type=int, help="tokens per lm-eval request (default: 2048 on cuda, 32 on cpu)")
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=PHASES, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    defaults = dict(dtype="bfloat16" if cuda else "float32", seqlen=2048 if cuda else 1024,
                    metrics_windows=32 if cuda else 2, metrics_batch=16 if cuda else 1,
                    prune_nsamples=16 if cuda else 2, prune_layers=args.layers if cuda else 1, eval_len=2048 if cuda else 32)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    return args


def main() -> int:
    args = parse_args()
    if args.only:
        print(RESULT_TAG + json.dumps(run_phase(args.only, args)), flush=True)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        results = {phase: run_subprocess(phase, os.path.join(tmp, f"{phase}.npy")) for phase in args.phases}
        diff = equal = None
        if {"metrics-before", "metrics-after"} <= set(results):
            before, after = (np.load(os.path.join(tmp, f"{p}.npy")) for p in ("metrics-before", "metrics-after"))
            diff, equal = float(np.abs(before - after).max()), before.tobytes() == after.tobytes()
    print_report(args, results, diff, equal)
    return 0


if __name__ == "__main__":
    sys.exit(main())
