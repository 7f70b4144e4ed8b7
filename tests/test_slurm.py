"""SLURM tier: a real one-node SLURM cluster (tests/slurm/cluster.sh) runs the tiny study with the SLURM
workflow profile, and the results must be the local run's, byte for byte; GPU jobs get the cluster's
(fake) GPU, CPU jobs ask for none.

Needs root and the Debian package registry (the cluster script installs Slurm and MUNGE when they
are missing); skipped only where there is no root or no apt-get.
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yte
from conftest import REPO, SNAKEMAKE, TINY

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
# Test-only settings on top of profiles/slurm: status checks start 2 s after a submission (the cluster
# keeps finished jobs visible to squeue for an hour), and one job's threads are capped at the test
# node's 2 CPUs, the threads the local run (--cores 2) trains the world model with.
TEST_OPTIONS = ["--slurm-init-seconds-before-status-checks", "2", "--max-threads", "2"]
# One output of each kind the tiny study makes on SLURM (its whole DAG would take over 7 minutes here,
# mostly job start-up), and the jobs they submit: one of each rule that is not a local rule.
TARGETS = ["results/metrics/world/web/seed0.json", "results/eval/world/dense/general.json",
           "results/eval/world/sparsegpt/0.5/web/seed0/general.json"]
REMOTE_RULES = {"train_world_model": 1, "tokenize": 1, "metrics": 1, "prune": 2, "evaluate_pruned": 1,
                "evaluate_dense": 1}  # the tiny study keeps its checkpoints: one job scores web's at both methods

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]


def on_slurm(workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile", env: dict | None = None):
    cmd = [SNAKEMAKE, "-s", str(snakefile), "--directory", str(workdir), "--workflow-profile", str(PROFILE),
           *TEST_OPTIONS, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, env=env)


def running(pid: int, name: str) -> bool:
    """Whether the daemon is still there (a zombie, or the PID taken by another program, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(") ")[1][0] != "Z" and stat[stat.index("(") + 1:stat.rindex(")")] == name[:15]


def slurm_jobs(workdir: Path) -> list[dict]:
    """Every job the cluster still knows (finished ones for MinJobAge) that ran in workdir: its rule
    (from the comment the executor plugin sets), state and GPU request."""
    out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True, check=True).stdout
    jobs = []
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("WorkDir") == str(workdir):
            rule = re.fullmatch(r"rule_(.+?)(?:_wildcards_.*)?", fields["Comment"]).group(1)
            jobs.append({"rule": rule, "state": fields["JobState"], "gpus": fields.get("TresPerJob", "")})
    return jobs


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running one-node cluster; stopped afterwards, and the daemons it started are gone."""
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster needs root (it installs packages and starts daemons)")
    if not shutil.which("apt-get") and not (shutil.which("slurmctld") and shutil.which("munged")):
        pytest.skip("Slurm is not installed and apt-get is not available to install it")
    state = tmp_path_factory.mktemp("slurm-cluster")
    started = subprocess.run([str(CLUSTER), "start", str(state)], capture_output=True, text=True)
    pids = {}
    if (state / "pids").is_file():
        pids = {name: int(pid) for name, pid in (line.split() for line in (state / "pids").read_text().splitlines())}
    try:
        assert started.returncode == 0, started.stdout + started.stderr[-5000:]
        assert set(pids) == {"munged", "slurmctld", "slurmd"}
        assert all(running(pid, name) for name, pid in pids.items())
        yield state
    finally:
        stopped = subprocess.run([str(CLUSTER), "stop", str(state)], capture_output=True, text=True)
        assert stopped.returncode == 0, stopped.stderr
        assert not [name for name, pid in pids.items() if running(pid, name)]
        link = Path("/etc/slurm/slurm.conf")
        assert not (link.is_symlink() and os.readlink(link) == str(state / "slurm.conf"))


def local_rules() -> set[str]:
    """The rules named in the workflow's localrules: blocks."""
    text = "\n".join(p.read_text() for p in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))])
    blocks = re.findall(r"^localrules:\n((?:[ \t]+\w+,?\n)+)", text, flags=re.M)
    return {name for block in blocks for name in re.findall(r"\w+", block)}


def test_profile_gives_every_job_a_runtime_and_names_no_partition_or_account(tmp_path, monkeypatch):
    for var in ("CALMIX_SLURM_GPU_MODEL", "CALMIX_SLURM_GPU_PARTITION"):
        monkeypatch.delenv(var, raising=False)
    with open(PROFILE / "config.yaml") as f:
        profile = yte.process_yaml(f, require_use_yte=True)
    listed = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--list-rules",
                             "--configfile", str(REPO / "config.yaml")], capture_output=True, text=True, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    jobs = set(listed.stdout.split()) - local_rules()
    assert jobs >= set(REMOTE_RULES) and not local_rules() & set(REMOTE_RULES)
    assert {rule for rule in ("prune_and_evaluate", "prune_and_evaluate_seed", "prune_seed", "evaluate_pruned_seed")
            if "runtime" not in profile["set-resources"][rule]} == set()  # temporary checkpoints' rules too
    assert {rule for rule in jobs if "runtime" not in profile["set-resources"].get(rule, {})} == set()
    # default-resources would hide the user's own profile's; partition and account are the user's.
    assert "default-resources" not in profile
    assert not re.search(r"slurm_(partition|account)", repr(profile))


GPU_SNAKEFILE = """
rule all:
    input: "prune_and_evaluate.txt", "gpu.txt", "cpu.txt"

rule prune_and_evaluate:  # named as a workflow GPU rule, so the profile adds CALMIX_SLURM_GPU_MODEL
    output: "prune_and_evaluate.txt"
    resources: gpu=1
    shell: "printf %s ${{CUDA_VISIBLE_DEVICES-none}} > {output}"

rule gpu:
    output: "gpu.txt"
    resources: gpu=1
    shell: "printf %s ${{CUDA_VISIBLE_DEVICES-none}} > {output}"

rule cpu:
    output: "cpu.txt"
    resources: gpu=0
    shell: "printf %s ${{CUDA_VISIBLE_DEVICES-none}} > {output}"
"""


def test_gpu_jobs_get_the_gpu_and_cpu_jobs_none(cluster, tmp_path):
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(GPU_SNAKEFILE)
    workdir = tmp_path / "run"
    workdir.mkdir()
    result = on_slurm(workdir, snakefile=snakefile, env={**os.environ, "CALMIX_SLURM_GPU_MODEL": "fake"})
    assert result.returncode == 0, result.stderr[-5000:]
    assert {name: (workdir / f"{name}.txt").read_text() for name in ("prune_and_evaluate", "gpu", "cpu")} == {
        "prune_and_evaluate": "0", "gpu": "0", "cpu": "none"}
    requests = {job["rule"]: job["gpus"] for job in slurm_jobs(workdir)}
    assert requests == {"prune_and_evaluate": "gres:gpu:fake:1", "gpu": "gres:gpu:1", "cpu": ""}


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """The tiny study's TARGETS made from scratch on the cluster, and the SLURM jobs they submitted."""
    workdir = tmp_path_factory.mktemp("slurm-run")
    start = time.monotonic()
    result = on_slurm(workdir, *TARGETS, "--configfile", str(TINY))
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-5000:]
    print(f"\ntiny study's targets on SLURM: {elapsed:.0f} s")
    return workdir, slurm_jobs(workdir)


def test_tiny_study_on_slurm_gives_the_local_results(tiny_run, slurm_run):
    local, cluster = tiny_run, slurm_run[0]
    files = sorted(p.relative_to(cluster) for d in ("shards", "metrics", "pruned", "eval")
                   for p in (cluster / "results" / d).rglob("*") if p.suffix in (".parquet", ".json", ".safetensors")
                   and p.name != "prune_report.json")  # it records wall times and memory
    assert {p.parts[1] for p in files} == {"shards", "metrics", "pruned", "eval"}
    assert {str(p) for p in files} >= {*TARGETS, "results/pruned/world/sparsegpt/0.5/web/seed0/model.safetensors"}
    for rel in files:
        assert (cluster / rel).read_bytes() == (local / rel).read_bytes(), rel


def test_only_heavy_jobs_are_submitted_and_none_asks_for_a_gpu(slurm_run):
    jobs = slurm_run[1]
    counts = {rule: sum(job["rule"] == rule for job in jobs) for rule in {job["rule"] for job in jobs}}
    assert counts == REMOTE_RULES  # local rules (corpus, shard, aggregates, ...) never reach SLURM
    assert {job["state"] for job in jobs} == {"COMPLETED"}
    assert not [job for job in jobs if job["gpus"]]  # device: cpu, so gpu=0: no --gpus
