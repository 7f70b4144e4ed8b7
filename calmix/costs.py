"""calmix-plan: what a study will cost before it starts: its jobs by rule, compute and disk.

Jobs come from Snakemake's own dry run of the study (``--forceall``: the whole study; without it:
what is left). Compute is counted, not guessed: floating-point operations from the model's shape
(every decoder layer's linears, attention and, for SparseGPT, the Hessians and the column sweep),
the calibration tokens (nsamples x seqlen per shard) and the evaluation items where their files are
here, divided by this machine's matmul rate measured when the plan runs, plus each job's fixed cost
(starting Python and importing torch and transformers, also measured now). On a CUDA study without
a GPU here the GPU time is a lower bound at the device's peak rate (nothing measured). Disk: each
checkpoint is the model's parameters at its dtype; temporary checkpoints (pruning.keep_checkpoints)
peak at one per job running at once.

Then how wide retention's intervals will be (calmix.analysis.power), with a finished study's measured
half-widths beside.

    calmix-plan                                       # config.yaml
    calmix-plan --configfile experiments/paper-llama3.1-8b.yaml --jobs 8
    calmix-plan --configfile experiments/smollm2-135m.yaml --intervals --retention 0.6
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from calmix.analysis.power import Assumptions, intervals_report

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: NVIDIA H200 SXM dense bf16 peak (the data sheet's 1,979 TFLOP/s is with 2:4 sparsity): a bound, not a measurement.
H200_PEAK_FLOPS = 989e12


@dataclass(frozen=True)
class Architecture:
    """A LLaMA-shaped decoder: what the plan needs of a model's config.json."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool

    def linears(self) -> list[tuple[int, int]]:
        """(in_features, out_features) of one decoder layer's prunable linears."""
        kv = self.hidden * self.kv_heads // self.heads
        h, i = self.hidden, self.intermediate
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]

    @property
    def layer_params(self) -> int:
        return sum(a * b for a, b in self.linears())

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.vocab * self.hidden * (1 if self.tied else 2)

    def forward_flops(self, tokens: int, context: int) -> float:
        """One forward pass over ``tokens`` tokens in sequences of ``context``: the linears, the
        attention scores and their weighted sum, and the LM head."""
        attention = 4 * tokens * context * self.hidden * self.layers
        return 2 * tokens * (self.layers * self.layer_params + self.vocab * self.hidden) + attention

    def prune_flops(self, method: str, tokens: int, context: int) -> float:
        """Pruning one checkpoint: calibration passes through every layer (inputs, then outputs of the
        pruned layer), and per method the statistics and the solve (SparseGPT: one Hessian per input,
        its inverse and the column sweep, about 2 x out x in^2)."""
        if method.startswith("magnitude"):
            return 0.0
        passes = 2 * self.forward_flops(tokens, context) - 2 * tokens * self.vocab * self.hidden
        if method.startswith("sparsegpt"):
            inputs = {self.hidden, self.intermediate}
            hessians = sum(2 * tokens * n * n for n in inputs) * 2 * self.layers
            solve = sum(n ** 3 + 2 * m * n * n for n, m in self.linears()) * self.layers
            return passes + hessians + solve
        return passes + 2 * tokens * (2 * self.hidden + self.intermediate) * self.layers


def architecture(config: dict[str, Any], model: str) -> Architecture | None:
    """The model's shape: the world's from the config, else its config.json where it is here (a local
    folder, a converted GGUF file, the Hugging Face cache); None when nothing says."""
    spec = config["models"][model]
    if spec["kind"] == "world":
        m = config["world"]["model"]
        return Architecture(m["hidden_size"], m["intermediate_size"], m["num_layers"], m["num_heads"], m["num_heads"],
                            config["world"]["vocab_size"], True)
    found = None
    if spec["kind"] == "local":
        found = Path(spec["path"]) / "config.json"
    elif spec["kind"] == "gguf":
        found = Path("results/models") / model / "config.json"
    elif spec["kind"] == "hub":
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec["path"], "config.json", revision=spec["revision"])
        found = Path(cached) if isinstance(cached, str) else None
    if found is None or not found.is_file():
        shape = spec.get("architecture")
        return Architecture(**{"tied": False, **shape}) if shape else None
    c = json.loads(found.read_text())
    return Architecture(c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["num_attention_heads"],
                        c.get("num_key_value_heads", c["num_attention_heads"]), c["vocab_size"],
                        bool(c.get("tie_word_embeddings", False)))


def jobs_by_rule(configfiles: list[str], *, whole: bool = True) -> dict[str, int]:
    """{rule: jobs} from Snakemake's dry run of the study (all of it, or what is left)."""
    cmd = [str(Path(sys.executable).with_name("snakemake")), "--dry-run", "--quiet", "rules",
           *(["--forceall"] if whole else []), "--configfile", *configfiles]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:  # snakemake prints some errors (no Snakefile here) on stdout
        said = "\n".join(part.strip()[-3000:] for part in (out.stdout, out.stderr) if part.strip())
        raise SystemExit(f"calmix-plan: snakemake's dry run failed in {Path.cwd()} (run calmix-plan from the "
                         f"repository root, where the Snakefile is):\n{said}")
    rows = re.findall(r"^(\w+)\s+(\d+)$", out.stdout, flags=re.M)
    return {rule: int(n) for rule, n in rows if rule != "total"}


def measured_rates() -> dict[str, float]:
    """This machine now: float32 matmul FLOP/s (torch, its default threads) and the fixed seconds of a
    job that loads a model (a fresh Python importing torch and transformers' LLaMA)."""
    import torch

    a = torch.randn(1024, 1024)
    a @ a
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 0.5:
        a @ a
        n += 1
    flops = n * 2 * 1024 ** 3 / (time.perf_counter() - start)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, transformers.models.llama.modeling_llama"], check=True)
    return {"flops": flops, "job_s": time.perf_counter() - start}


def evaluation_tokens(config: dict[str, Any]) -> tuple[int, list[str]]:
    """Tokens one checkpoint's evaluation scores (every request's context and continuation), from the
    world's items or the offline items here, at ~4 characters a token; and the tasks with no items here
    (lm-eval's own before `snakemake prefetch`: not counted)."""
    total, unknown = 0, []
    for dim, spec in config["evaluation"]["dimensions"].items():
        for task in spec["tasks"]:
            path = Path(f"results/eval/items/{task}.jsonl")
            if task.startswith("world_"):  # what world_eval_items writes, generated here (milliseconds)
                from calmix.world.domain import World

                rows = World(config["world"]["seed"]).eval_items(task, config["world"]["eval_items"], seed=0)
            elif path.is_file():
                rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            else:
                unknown.append(task)
                continue
            cap = spec.get("task_limits", {}).get(task, spec.get("limit", config["evaluation"].get("limit")))
            rows = rows[:cap] if cap else rows
            chars = sum(len(json.dumps(r)) * max(1, len(r.get("choices", []))) for r in rows)
            total += chars // 4
    return total, unknown


def study_config(configfiles: list[str]) -> dict[str, Any]:
    """The study's validated config; an invalid one exits with the config check's message."""
    from calmix.config import ConfigError, error_line, read_config_files, validate_config

    try:
        return validate_config(read_config_files(configfiles))
    except ConfigError as e:
        raise SystemExit(error_line(e, configfiles)) from None


def plan(configfiles: list[str], jobs: int, assumptions: Assumptions = Assumptions()) -> str:
    """What the study costs, then how wide its intervals will be (intervals_report)."""
    from calmix.pruning import plan as pruning_plan

    config = study_config(configfiles)
    rules, left = jobs_by_rule(configfiles), jobs_by_rule(configfiles, whole=False)
    rates = measured_rates()
    cuda = config["device"] == "cuda"
    cal = config["calibration"]
    tokens = cal["nsamples"] * cal["seqlen"]
    calibs = list(cal["sources"]) + list(cal["builders"])
    baseline = config["report"]["baseline"] or list(cal["sources"])[0]
    checkpoints = pruning_plan.checkpoints(config["pruning"], calibs, cal["seeds"], baseline)
    keep = pruning_plan.keeps_checkpoints(config["pruning"], config["models"])
    eval_tokens, unknown = evaluation_tokens(config)
    width = max(map(len, [*rules, "total"])) + 1
    lines = [f"Study: {' '.join(configfiles)}", "", f"{'rule':<{width}}{'jobs':>7}{'to run':>8}"]
    lines += [f"{rule:<{width}}{n:>7}{left.get(rule, 0):>8}" for rule, n in rules.items()]
    lines.append(f"{'total':<{width}}{sum(rules.values()):>7}{sum(left.values()):>8}")
    for model in config["models"]:
        arch = architecture(config, model)
        lines.append("")
        if arch is None:
            lines.append(f"model {model}: shape unknown (no config.json here; give models.{model}.architecture)")
            continue
        size = arch.params * DTYPE_BYTES[config["models"][model]["dtype"]]
        prune = sum(arch.prune_flops(c.method, tokens, cal["seqlen"]) for c in checkpoints)
        shards = rules.get("metrics", 0) + rules.get("generate_pool", 0)
        forward = arch.forward_flops(tokens, cal["seqlen"]) * shards
        evaluation = arch.forward_flops(eval_tokens, cal["seqlen"]) * (len(checkpoints) + 1)
        train = 0.0
        if config["models"][model]["kind"] == "world":  # trained by the workflow: forward and backward, 3 x a forward
            t = config["world"]["train"]
            train = 3 * arch.forward_flops(t["steps"] * t["batch_size"] * t["seqlen"], t["seqlen"])
        flops = train + prune + forward + evaluation
        fixed = sum(rules.values()) * rates["job_s"]
        peak = size * (len(checkpoints) if keep else min(jobs, len(checkpoints)))
        final = size * (len(checkpoints) if keep else 0)
        lines += [
            f"model {model}: {arch.params / 1e6:,.1f}M parameters, {arch.layers} layers, hidden {arch.hidden}, "
            f"{size / 2**30:,.2f} GiB a checkpoint ({config['models'][model]['dtype']})",
            f"  compute: {flops / 1e12:,.1f} TFLOP (training {train / 1e12:,.1f}; pruning {prune / 1e12:,.1f}: {len(checkpoints)} checkpoints, "
            f"{prune / max(1, len(checkpoints)) / arch.layers / 1e9:,.2f} GFLOP a layer; calibration passes "
            f"{forward / 1e12:,.1f}; evaluation {evaluation / 1e12:,.1f} over {eval_tokens:,} tokens a checkpoint"
            + (f", not counting {', '.join(unknown)}: no items here (snakemake prefetch / their items rule)" if unknown else "")
            + ")",
        ]
        if cuda:
            lines.append(f"  GPU: at least {flops / H200_PEAK_FLOPS / 3600:,.2f} GPU-hours (H200 dense bf16 peak, "
                         "not measured) plus the jobs' start-up")
        cpu_s = flops / rates["flops"] + fixed
        lines.append(f"  CPU: {cpu_s / 3600:,.2f} CPU-hours at this machine's measured {rates['flops'] / 1e9:,.0f} "
                     f"GFLOP/s and {rates['job_s']:.1f} s a job; {cpu_s / jobs / 60:,.1f} min wall on {jobs} "
                     "jobs at once")
        lines.append(f"  disk: checkpoints {'kept' if keep else 'temporary'}: peak {peak / 2**30:,.1f} GiB, "
                     f"final {final / 2**30:,.1f} GiB (plus the dense model and small files)")
    return "\n".join(lines) + "\n" + intervals_report(config, assumptions)


def main() -> None:
    parser = argparse.ArgumentParser(prog="calmix-plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", nargs="+", default=["config.yaml"])
    parser.add_argument("--jobs", type=int, default=2, help="jobs at once (--cores locally, the profile's jobs on SLURM)")
    parser.add_argument("--intervals", action="store_true",
                        help="print only the intervals' prediction (no dry run, no timing: seconds)")
    assumed = parser.add_argument_group("assumptions of the intervals' prediction, where no items say")
    for f in fields(Assumptions):
        assumed.add_argument(f"--{f.name.replace('_', '-')}", type=float, default=f.default,
                             help=f"{f.metadata['help']} (default {f.default:g})")
    args = parser.parse_args()
    assumptions = Assumptions(**{f.name: getattr(args, f.name) for f in fields(Assumptions)})
    print(intervals_report(study_config(args.configfile), assumptions).lstrip("\n") if args.intervals
          else plan(args.configfile, args.jobs, assumptions))


if __name__ == "__main__":
    main()
