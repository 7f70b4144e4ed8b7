"""Evaluation settings reach the evaluation jobs through Snakemake params.

One job evaluates a checkpoint on every dimension; editing a dimension reruns that job, which
rescores only the edited dimension (tests/test_evaluation.py: its evaluation key). A finished study
is simulated with `snakemake --touch` (which records each job's params in the metadata, as a real
run does); dry runs of edited configs then show which jobs would rerun because their params changed.
Only the dense evaluation is targeted, to keep the DAG small.
"""

import base64
import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

pytestmark = pytest.mark.workflow

CONFIG = {
    "models": {"world": {"kind": "world"}},
    "calibration": {"sources": {"web": {"kind": "world", "generator": "web", "docs": 10}}},
    "evaluation": {"batch_size": 8, "dimensions": {"general": {"tasks": ["world_general"]}, "code": {"tasks": ["world_code"]}}},
}
DENSE_JOB = "evaluate_dense: results/eval/world/dense/general.json (update)"  # the job, by its first output


def _snakemake(workdir: Path, config: dict, *args: str) -> str:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    targets = [f"results/eval/world/dense/{d}.json" for d in config["evaluation"]["dimensions"]]
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(path), "--cores", "1"]
    result = subprocess.run(cmd + list(args) + ["--", *targets], capture_output=True, text=True, cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _params_reruns(workdir: Path, config: dict) -> dict[str, str]:
    """Planned job (rule: output) -> its reason, for a dry run that reruns on changed params only."""
    out = _snakemake(workdir, config, "-n", "--rerun-triggers", "params")
    jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    output: ([^,\n]+).*\n(?:    .*\n)*?    reason: (.*)", out, flags=re.M)
    return {f"{rule}: {output}": reason for rule, output, reason in jobs}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A working directory whose dense evaluations look finished under CONFIG."""
    workdir = tmp_path_factory.mktemp("finished")
    for path in ["results/world/pretrain.jsonl", "results/world/pretrain.json", "results/models/world/config.json",
                 "results/world/eval/world_general.jsonl", "results/world/eval/world_code.jsonl"]:
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).write_text("")
    for dim in CONFIG["evaluation"]["dimensions"]:
        for suffix in (".json", ".items.parquet"):
            (workdir / f"results/eval/world/dense/{dim}{suffix}").parent.mkdir(parents=True, exist_ok=True)
            (workdir / f"results/eval/world/dense/{dim}{suffix}").write_text("")
    _snakemake(workdir, CONFIG, "--touch", "--forceall")
    return workdir


def _edited(**dims) -> dict:
    config = copy.deepcopy(CONFIG)
    for dim, settings in dims.items():
        config["evaluation"]["dimensions"].setdefault(dim, {}).update(settings)
    return config


def test_spelling_out_the_defaults_reruns_nothing(finished):
    meta = finished / ".snakemake" / "metadata" / base64.b64encode(b"results/eval/world/dense/code.json").decode()
    assert any("'harness': {'batch_size': 8, 'limit': None, 'seed': 1234}" in p for p in json.loads(meta.read_text())["params"])
    assert _params_reruns(finished, CONFIG) == {}
    # spelling out the defaults changes nothing either (unset shots are each task's own: no default to spell out)
    assert _params_reruns(finished, _edited(general={"metric": {}, "limit": None, "task_num_fewshot": {}})) == {}


@pytest.mark.parametrize(
    "settings",
    [{"num_fewshot": 3}, {"num_fewshot": 0}, {"task_num_fewshot": {"world_code": 2}}, {"limit": 10},
     {"metric": {"world_code": "exact_match,strip"}}],
    ids=["num_fewshot", "zero_shots", "task_num_fewshot", "limit", "metric"],
)
def test_editing_one_dimension_reruns_the_checkpoint_job(finished, settings):
    """num_fewshot: 0 too: it overrides a task's own shots (gsm8k's YAML says 5), so it is a setting, not the default."""
    planned = _params_reruns(finished, _edited(code=settings))
    assert list(planned) == [DENSE_JOB] and "Params have changed" in planned[DENSE_JOB]


def test_the_global_limit_reaches_dimensions_without_their_own(finished):
    config = _edited(code={"limit": None})
    config["evaluation"]["limit"] = 10
    assert list(_params_reruns(finished, config)) == [DENSE_JOB]
    config["evaluation"]["dimensions"]["general"]["limit"] = None  # where every dimension has its own, nothing changes
    assert _params_reruns(finished, config) == {}


def test_an_optional_dimension_adds_its_items_and_reruns_the_checkpoint_job(finished):
    out = _snakemake(finished, _edited(perplexity={"tasks": ["world_perplexity"]}), "-n")
    planned = sorted(re.findall(r"^rule (\w+):\n(?:    .*\n)*?    output: ([^,\n]+)", out, flags=re.M))
    assert planned == [
        ("corpus", "results/corpora/web.jsonl"),  # what the held-out check reads
        ("evaluate_dense", "results/eval/world/dense/general.json (update)"),
        ("heldout_check", "results/eval/heldout_check.json"),  # held-out text: no source may hold it
        ("world_eval_items", "results/world/eval/world_perplexity.jsonl"),
    ]
