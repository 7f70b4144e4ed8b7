"""Damage Snakemake cannot see (mtimes restored, a manifest deleted) in a finished study: calmix-verify
names it with its rebuild, a job that would use it refuses it with the same rebuild, and a shard deleted under a running prune
ends in the integrity message, never a raw FileNotFoundError.

Each test works on a copy of the finished tiny run (the `tiny_run` fixture in conftest.py).
"""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, edit_in_place, snakemake, snakemake_command

pytestmark = pytest.mark.workflow

SHARD = "results/shards/world/web/seed0.parquet"
PRUNED = "results/pruned/world/sparsegpt/0.5/web/seed0"
REPORT = "results/prune_reports/world/sparsegpt/0.5/web/seed0.json"  # what a damaged checkpoint's rebuild forces
EVAL = "results/eval/world/sparsegpt/0.5/web/seed0/general.json"
HINT = "[--configfile <your study's config>]"


def run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return snakemake(workdir, *args, configfile=TINY)


def verify(workdir: Path) -> subprocess.CompletedProcess:
    """calmix-verify (the console script the install puts next to python) in the study's working directory."""
    return subprocess.run([Path(sys.executable).with_name("calmix-verify")], capture_output=True, text=True, cwd=workdir)


def test_an_intact_study_verifies(finished):
    result = verify(finished)
    assert result.returncode == 0, result.stdout
    assert re.fullmatch(r"\d+ files verified, 0 problems\n", result.stdout) and int(result.stdout.split()[0]) > 20


@pytest.mark.parametrize("damaged, rebuild, what", [
    (SHARD, SHARD, "sha256 differs from what seed0.json records"),
    (f"{PRUNED}/model.safetensors", REPORT, "sha256 differs from what prune_report.json records"),
])
def test_an_in_place_edit_snakemake_cannot_see_is_named_with_its_rebuild(finished, damaged, rebuild, what):
    edit_in_place(finished / damaged)
    dry = run(finished, "-n")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr  # mtimes: nothing to see
    result = verify(finished)
    lines = result.stdout.splitlines()
    assert result.returncode == 1 and len(lines) == 2 and lines[1].endswith(" files verified, 1 problem")
    assert lines[0] == f"{damaged}: {what} (truncated or edited); rebuild it: snakemake --forcerun {rebuild} {HINT}"


def test_a_deleted_prune_report_is_named_and_its_rebuild_prunes_the_checkpoint_again(finished):
    weights = (finished / PRUNED / "model.safetensors").read_bytes()
    (finished / PRUNED / "prune_report.json").unlink()
    result = verify(finished)
    assert result.returncode == 1
    assert f"{PRUNED}: no prune_report.json, so its weights cannot be checked (deleted?); " \
           f"rebuild it: snakemake --forcerun {REPORT} {HINT}" in result.stdout.splitlines()
    for suffix in (".json", ".items.parquet"):  # as if it had not been evaluated yet
        (finished / EVAL.replace(".json", suffix)).unlink()
    refused = run(finished, EVAL)  # its evaluation job (a kept checkpoint's is apart from its prune job)
    assert refused.returncode != 0 and f"has no prune_report.json" in refused.stderr
    assert f"--forcerun {REPORT}" in refused.stderr
    rerun = run(finished, EVAL, "--forcerun", REPORT)  # the rebuild both name
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert (finished / PRUNED / "prune_report.json").is_file() and (finished / EVAL).is_file()
    assert (finished / PRUNED / "model.safetensors").read_bytes() == weights
    assert verify(finished).returncode == 0


def test_a_shard_deleted_while_its_prune_runs_ends_in_the_integrity_message(finished):
    scripts = finished / ".snakemake" / "scripts"
    before = set(scripts.glob("*")) if scripts.is_dir() else set()
    proc = subprocess.Popen(snakemake_command(finished, PRUNED, "--forcerun", PRUNED, configfile=TINY), cwd=finished,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not [p for p in (set(scripts.glob("*.prune.py")) if scripts.is_dir() else set()) - before]:
        assert proc.poll() is None, "the run ended before the prune job started"
        assert time.monotonic() < deadline, "the prune job never started"
        time.sleep(0.005)
    (finished / SHARD).unlink()  # the job's script is written; Python has yet to import torch and read it
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0
    log = (finished / "logs/prune/world/sparsegpt/0.5/web.log").read_text()
    assert f"{SHARD} is missing; rebuild it: run snakemake again with `--forcerun {SHARD}`" in stderr + log
    assert "FileNotFoundError" not in stderr + log
    assert not (finished / PRUNED).exists()


def test_the_verify_rule_runs_calmix_verify_on_results(finished):
    intact = run(finished, "verify")
    assert intact.returncode == 0, intact.stderr[-3000:]
    assert re.search(r"^\d+ files verified, 0 problems$", intact.stdout, flags=re.M)
    edit_in_place(finished / SHARD)
    damaged = run(finished, "verify")
    assert damaged.returncode != 0 and "Error in rule verify" in damaged.stderr
    line = f"{SHARD}: sha256 differs from what seed0.json records (truncated or edited); " \
           f"rebuild it: snakemake --forcerun {SHARD} {HINT}"
    assert line in damaged.stdout.splitlines()
    assert line in (finished / "logs/verify.log").read_text().splitlines()
