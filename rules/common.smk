import os
import re
from pathlib import Path

from calmix.config import ConfigError, validate_config

RESOURCES = Path(workflow.basedir) / "resources"

try:
    validate_config(config, RESOURCES / "config.schema.yaml")
except ConfigError as e:
    raise WorkflowError(f"Invalid config: {e}") from None

# The built-in study is offline by design: fail fast instead of retrying hub downloads.
if all(m["kind"] != "hub" for m in config["models"].values()):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

MODELS = list(config["models"])
SOURCES = list(config["calibration"]["sources"])
SEEDS = config["calibration"]["seeds"]
METHODS = config["pruning"]["methods"]
SPARSITIES = config["pruning"]["sparsities"]
DIMENSIONS = list(config["evaluation"]["dimensions"])
TASK_DIR = str(RESOURCES / "lm_eval_tasks")

WORLD_MODELS = [m for m, spec in config["models"].items() if spec["kind"] == "world"]


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    calib="[^/]+",
    seed=r"\d+",
    method="[a-z0-9_]+",
    sparsity=r"0\.\d+",
    dimension="[^/]+",
    task="[^/]+",


def model_dir(model):
    """The dense model's save_pretrained folder: trained by the workflow, or given by the user."""
    spec = config["models"][model]
    return f"results/models/{model}" if spec["kind"] == "world" else spec["path"]


def source_spec(wildcards):
    """Only this source's slice of the config, so other sources' edits never rerun this branch."""
    return config["calibration"]["sources"][wildcards.calib]


def world_seed_of(spec):
    return config["world"]["seed"] if spec["kind"] == "world" else None


def task_data(dimension):
    """Local lm-eval task data this dimension's evaluation reads (the world's held-out items)."""
    tasks = config["evaluation"]["dimensions"][dimension]["tasks"]
    return [f"results/world/eval/{t}.jsonl" for t in tasks if t.startswith("world_")]


def shard_path(model, calib, seed):
    return f"results/shards/{model}/{calib}/seed{seed}.parquet"


def pruned_dir(model, method, sparsity, calib, seed):
    return f"results/pruned/{model}/{method}/{sparsity}/{calib}/seed{seed}"


def pruned_evals():
    return expand(
        "results/eval/{model}/{method}/{sparsity}/{calib}/seed{seed}/{dimension}.json",
        model=MODELS, method=METHODS, sparsity=SPARSITIES, calib=SOURCES, seed=SEEDS, dimension=DIMENSIONS,
    )


def dense_evals():
    return expand("results/eval/{model}/dense/{dimension}.json", model=MODELS, dimension=DIMENSIONS)
