"""Faults: a SIGKILLed run resumes to identical results, damaged files are refused, code edits rerun their stages.

Each test works on a copy of the finished tiny run (the `tiny_run` fixture in conftest.py).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY, snakemake, snakemake_command, write_config

PRUNED = "results/pruned/world/sparsegpt/0.5/web/seed0"
REPORT = "results/prune_reports/world/sparsegpt/0.5/web/seed0.json"  # what a damaged checkpoint's rebuild forces
EVAL = "results/eval/world/wanda/0.5/code/seed1/perplexity.json"
SHARD = "results/shards/world/web/seed0.parquet"

pytestmark = pytest.mark.workflow


def run(workdir: Path, *args: str, env: dict | None = None, snakefile: Path = REPO / "Snakefile") -> subprocess.CompletedProcess:
    return snakemake(workdir, *args, configfile=TINY, snakefile=snakefile, env=env)


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def kill_when(workdir: Path, args: list[str], ready, timeout: float = 300) -> None:
    """Start snakemake, wait until ready() holds, then SIGKILL it and every job it started."""
    proc = subprocess.Popen(snakemake_command(workdir, *args, configfile=TINY), cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before the moment to kill it"
            assert time.monotonic() < deadline, "the moment to kill never came"
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def resume(workdir: Path) -> subprocess.CompletedProcess:
    """What a user does after a crash: --unlock (the killed run's lock is left), then the same command again.

    profiles/default sets rerun-incomplete, so jobs the kill interrupted rerun without asking.
    """
    locked = run(workdir)
    assert locked.returncode != 0 and "--unlock" in locked.stderr  # Snakemake says what to do
    assert run(workdir, "--unlock").returncode == 0
    result = run(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


AGGREGATES = ["results/report.md", "results/plots", *[f"results/tables/{t}.{ext}" for ext in ("csv", "parquet")
               for t in ("retention", "retention_summary", "retention_settings", "retention_comparisons", "correlations")]]


def unfinished(workdir: Path, *outputs: str) -> None:
    """Remove outputs and the aggregates downstream of them, as if the run had not reached them yet.

    (Snakemake does not rebuild a missing intermediate file whose consumers are up to date.)
    """
    for out in [*outputs, *AGGREGATES]:
        path = workdir / out
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def test_sigkill_while_a_prune_writes_its_checkpoint_resumes_to_identical_results(finished, tiny_run):
    evals = [f"{PRUNED}/{d}.{ext}".replace("results/pruned", "results/eval") for d in ("general", "perplexity")
             for ext in ("json", "items.parquet")]
    unfinished(finished, PRUNED, *evals)
    parent = (finished / PRUNED).parent

    def writing() -> bool:  # the checkpoint's temporary folder exists: save_pretrained, reload or hashing runs
        return any(parent.glob(".seed0.tmp-*"))

    kill_when(finished, [], writing)
    assert not (finished / PRUNED).exists()  # killed before the rename: nothing that looks finished
    assert any(parent.glob(".seed0.tmp-*"))  # what SIGKILL left behind
    resume(finished)
    assert not any(parent.glob(".seed0.tmp-*"))
    original = tiny_run
    resumed, uninterrupted = files_under(finished / PRUNED), files_under(original / PRUNED)
    report = json.loads(resumed.pop("prune_report.json"))  # its timings differ; the weights it records do not
    assert report["weights_sha256"] == json.loads(uninterrupted.pop("prune_report.json"))["weights_sha256"]
    assert resumed == uninterrupted and "model.safetensors" in resumed
    for out in [*evals, "results/tables/retention.csv", "results/tables/correlations.csv"]:
        assert (finished / out).read_bytes() == (original / out).read_bytes(), out


def test_sigkill_during_an_evaluation_resumes_to_identical_scores(finished, tiny_run):
    items = EVAL.replace(".json", ".items.parquet")
    unfinished(finished, EVAL, items)
    log = finished / "logs/evaluate_pruned/world/code.log"  # the set's evaluation job
    log.unlink()

    def evaluating() -> bool:  # the job's script has started and is logging
        return log.is_file() and log.stat().st_size > 0

    kill_when(finished, [], evaluating)
    assert not (finished / EVAL).exists() and not (finished / items).exists()
    resume(finished)
    for out in (EVAL, items, "results/tables/retention.csv"):
        assert (finished / out).read_bytes() == (tiny_run / out).read_bytes(), out


def test_a_truncated_shard_stops_its_consumer_naming_the_file_and_the_rebuild(finished):
    original = (finished / SHARD).read_bytes()
    (finished / SHARD).write_bytes(original[:-64])
    failed = run(finished, "--forcerun", PRUNED)
    assert failed.returncode != 0
    log = (finished / "logs/prune/world/sparsegpt/0.5/web.log").read_text()
    message = f"{SHARD}: sha256 does not match its manifest"
    assert message in failed.stderr + log and f"--forcerun {SHARD}" in failed.stderr + log
    assert "Error in rule prune:" in failed.stderr
    rebuilt = run(finished, SHARD, "--forcerun", SHARD)  # the error's command, for that file alone
    assert rebuilt.returncode == 0, rebuilt.stderr[-4000:]
    assert (finished / SHARD).read_bytes() == original


def test_an_edited_checkpoint_is_pruned_again_when_its_job_reruns(finished):
    weights = finished / PRUNED / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-8] + bytes(8))
    target = f"{PRUNED}/general.json".replace("results/pruned", "results/eval")
    records = {p: p.read_bytes() for p in (finished / target).parent.iterdir()}
    refused = run(finished, "--forcerun", target)  # its evaluation alone: the checkpoint is refused, named
    assert refused.returncode != 0 and "Error in rule evaluate_pruned:" in refused.stderr
    log = (finished / "logs/evaluate_pruned/world/web.log").read_text()
    assert f"--forcerun {REPORT}" in refused.stderr + log and "model.safetensors" in refused.stderr + log
    rerun = run(finished, "--forcerun", REPORT)  # what the error says: its prune job
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert weights.read_bytes() == original  # the same weights, so every record stays as it was
    assert {p: p.read_bytes() for p in (finished / target).parent.iterdir()} == records


def planned(result: subprocess.CompletedProcess) -> dict[str, int]:
    """{rule: jobs} from the dry run's job stats table."""
    table = result.stdout.partition("Job stats:")[2].partition("total")[0]
    return {rule: int(n) for rule, n in (line.split() for line in table.splitlines()[3:] if line.strip())}


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """The workflow and its library, copied so a test can edit a module; PYTHONPATH makes jobs import the copy."""
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in ("Snakefile", "rules", "scripts", "resources", "calmix", "profiles", "envs", "report"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif (REPO / name).exists():
            shutil.copy2(REPO / name, copy / name)
    return copy


BUILDERS = {"mix": {"kind": "mix"}, "selfcal": {"kind": "selfcal"}, "sgs": {"kind": "sgs", "pool_size": 10},
            "igsp": {"kind": "igsp"}}


@pytest.fixture(scope="module")
def with_builders(tiny_run, tmp_path_factory) -> tuple[Path, Path]:
    """The finished tiny study plus the four kinds of built set, up to their OIT metrics (their pools,
    selections and mixes): (workdir, config)."""
    workdir = tmp_path_factory.mktemp("builders") / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    config = yaml.safe_load(TINY.read_text())
    config["calibration"]["builders"] = BUILDERS
    configfile = write_config(workdir.parent / "builders.yaml", config)
    metrics = [f"results/metrics/world/{b}/seed{s}.json" for b in BUILDERS for s in config["calibration"]["seeds"]]
    result = snakemake(workdir, *metrics, configfile=configfile)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, configfile


def code_reruns(stdout: str) -> dict[str, list[str]]:
    """{rule: [wildcards of each job]} of the dry run's jobs that rerun because their params (the code
    digests among them) changed; jobs that are merely missing or downstream are left out."""
    changed: dict[str, list[str]] = {}
    for job in re.split(r"\n(?:local)?rule ", stdout)[1:]:
        if "Params have changed since last execution" in job:
            wildcards = re.search(r"wildcards: (.*)", job)
            changed.setdefault(job.partition(":")[0], []).append(wildcards[1] if wildcards else "")
    return changed


@pytest.mark.parametrize("module, reruns", [
    ("fetch/hub.py", {}),  # only the fetch rules run it, and a world study fetches nothing
    ("world/domain.py", {"world_corpus": 1, "world_eval_items": 2, "corpus": 3}),  # every source is a world source
    ("pruning/wanda.py", {"prune": 3}),  # wanda's checkpoints only (one job per set), not their scoring
    ("pruning/driver.py", {"prune": 6, "prune_seed": 1}),  # every checkpoint
    ("calibration/metrics.py", {"metrics": 7}),  # one job per set; not the pools or selections built with n-gram scores
    ("calibration/selection.py", {"select_windows": 6}),  # not the pools
    ("evaluation/scoring.py", {"evaluate_dense": 1, "evaluate_pruned": 3, "evaluate_pruned_seed": 1}),  # no prune
])
def test_editing_a_module_reruns_exactly_the_jobs_that_run_it(with_builders, repo_copy, module, reruns):
    workdir, configfile = with_builders
    path = repo_copy / "calmix" / module
    path.write_text(path.read_text() + "\nEDITED = 1\n")
    env = {**os.environ, "PYTHONPATH": str(repo_copy)}
    result = snakemake(workdir, "-n", configfile=configfile, snakefile=repo_copy / "Snakefile", env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    changed = code_reruns(result.stdout)
    assert {rule: len(jobs) for rule, jobs in changed.items()} == reruns, result.stdout[-3000:]
    if module == "pruning/wanda.py":
        assert all("method=wanda," in job for job in changed["prune"])


def test_editing_the_report_code_reruns_only_the_report(finished, repo_copy):
    """On the finished study (with_builders has no builders' figure yet, so its report is missing anyway)."""
    path = repo_copy / "calmix" / "analysis" / "report.py"
    path.write_text(path.read_text() + "\nEDITED = 1\n")
    env = {**os.environ, "PYTHONPATH": str(repo_copy)}
    result = run(finished, "-n", env=env, snakefile=repo_copy / "Snakefile")
    assert result.returncode == 0, result.stderr[-4000:]
    assert {rule: len(jobs) for rule, jobs in code_reruns(result.stdout).items()} == {"report": 1}
    assert set(planned(result)) == {"report", "all"}


def test_comments_and_docstrings_rerun_nothing(finished, repo_copy):
    path = repo_copy / "calmix" / "pruning" / "driver.py"
    text = path.read_text().replace('"""', '"""Edited. ', 1)
    path.write_text(text + "\n# a comment, and a docstring edit above, change nothing the code does\n")
    env = {**os.environ, "PYTHONPATH": str(repo_copy)}
    result = run(finished, "-n", env=env, snakefile=repo_copy / "Snakefile")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Nothing to be done" in result.stdout + result.stderr

