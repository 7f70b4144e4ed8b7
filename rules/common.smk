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
DATA_FREE = {"magnitude"}  # methods that use no calibration data: one checkpoint, calib "none"
DEVICE = config["device"]
GPU = int(DEVICE == "cuda")
DIMENSIONS = list(config["evaluation"]["dimensions"])
TASK_DIR = str(RESOURCES / "lm_eval_tasks")

WORLD_MODELS = [m for m, spec in config["models"].items() if spec["kind"] == "world"]


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    calib="[^/]+",
    seed=r"\d+",
    method="[a-z0-9_]+",
    target=r"0\.\d+|\d+of\d+",
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


def pruning_targets():
    """Path labels of the pruning targets: '0.6' for unstructured sparsities, '2of4' for N:M."""
    structures = config["pruning"]["structures"]
    labels = [str(s) for s in config["pruning"]["sparsities"]] if "unstructured" in structures else []
    return labels + [s.replace(":", "of") for s in structures if s != "unstructured"]


TARGETS = pruning_targets()


def calibrations(method):
    """(calibration set, seed) pairs a method is pruned with; data-free methods get one, 'none'."""
    if method in DATA_FREE:
        return [("none", 0)]
    return [(calib, seed) for calib in SOURCES for seed in SEEDS]


def pruning_inputs(wildcards):
    inputs = {"model": model_dir(wildcards.model)}
    if wildcards.method not in DATA_FREE:
        inputs["shard"] = f"results/shards/{wildcards.model}/{wildcards.calib}/seed{wildcards.seed}.parquet"
    return inputs


def method_options(wildcards):
    """Only the knobs this method reads, so tuning one method never reruns another."""
    p = config["pruning"]
    options = {"skip": p["skip"]}
    if wildcards.method == "sparsegpt":
        options.update(blocksize=p["blocksize"], percdamp=p["percdamp"])
    if wildcards.method == "wanda":
        options.update(cumulative=p["wanda_variant"] == "cumulative")
    if wildcards.method not in DATA_FREE:
        options.update(true_sequential=p["true_sequential"], batch_size=p["batch_size"])
    return options


def pruned_evals():
    return [
        f"results/eval/{model}/{method}/{target}/{calib}/seed{seed}/{dimension}.json"
        for model in MODELS
        for method in METHODS
        for target in TARGETS
        for calib, seed in calibrations(method)
        for dimension in DIMENSIONS
    ]


def dense_evals():
    return expand("results/eval/{model}/dense/{dimension}.json", model=MODELS, dimension=DIMENSIONS)
