"""The README's commands, run as written from the root of a fresh copy of the repository.

Every command the README shows (fenced bash blocks and `make ...`/`snakemake ...` code spans) must be
handled here, so a new command cannot enter the README untested. Commands that would run a study run
as dry runs; their job counts must equal the README's table ("jobs planned"). A fresh copy is what
`git clone` gives: the tracked and untracked-but-not-ignored files, nothing from results/ or .venv.
"""

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.workflow

README = (REPO / "README.md").read_text()
VENV_BIN = REPO / ".venv" / "bin"

# Commands that cannot run here, and why (each must still appear in the README as written).
NOT_RUN_HERE = {
    "hf auth login": "asks for the user's hub token",
    "--index-url <your CUDA wheel index>": "a placeholder for the user's CUDA wheel index",
    "pip install -c constraints.txt -e '.[test]'": "the install `make` runs (checked against the Makefile)",
    "make test": "the suite itself (checked: it runs pytest on tests/, and .ci/run calls it)",
    "tail -f": "follows a log of a running study",
    "--profile ~/.config/snakemake/mycluster": "the user's own cluster profile (tests/test_slurm.py runs profiles/slurm)",
}


def readme_commands(text: str) -> list[str]:
    """Each command line of the README's bash blocks (continuations joined, comments dropped), then
    each inline code span that is a make or snakemake command."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    for span in re.findall(r"`((?:make|snakemake|\.venv/bin/snakemake|python -m calmix\.\w+|calmix-verify|calmix-plan)(?: [^`]*)?)`", text):
        commands.append(" ".join(span.split()))
    return list(dict.fromkeys(commands))


def documented_job_counts(text: str) -> dict[str, int]:
    """The README's table: command -> jobs planned."""
    rows = re.findall(r"^\| `([^`]+)` \| [^|]+ \| (\d+) \|$", text, flags=re.M)
    return {command: int(jobs) for command, jobs in rows}


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh copy of the working tree (what a clone of it would hold), with the test's .venv."""
    root = tmp_path_factory.mktemp("clone")
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, files):
        source = REPO / rel
        if source.is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(source.read_bytes())
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


_PLANS: dict[tuple[str, Path], subprocess.CompletedProcess] = {}


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command through a shell in cwd; dry runs are planned once per (command, directory)."""
    if " -n" in command and (command, cwd) in _PLANS:
        return _PLANS[command, cwd]
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if " -n" in command:
        _PLANS[command, cwd] = result
    return result


def planned_total(output: str) -> int:
    totals = re.findall(r"^total\s+(\d+)$", output, flags=re.M)
    assert totals, output[-3000:]
    return int(totals[0])


def dry_run(command: str) -> str:
    """The same snakemake command, planning only: a report command plans the study it reports on."""
    words = shlex.split(command.replace(".venv/bin/snakemake", "snakemake"))
    if "--report" in words:
        i = words.index("--report")
        del words[i : i + 2]
    words = [w for w in words if w not in ("-n", "--dry-run")]
    return shlex.join([words[0], "-n", *words[1:]])


def make_commands(command: str, clone: Path) -> list[str]:
    """The snakemake commands `make` would run for this target (make -n prints them, recursing)."""
    result = run(command.replace("make ", "make -n ", 1), clone)
    assert result.returncode == 0, result.stderr
    return [line.strip().removeprefix(".venv/bin/") for line in result.stdout.splitlines()
            if line.strip().startswith(".venv/bin/snakemake")]


def test_every_readme_command_is_known():
    commands = readme_commands(README)
    assert "make run" in commands and "make test" in commands
    assert README.index("make run") < README.index("make test") < 400  # the README opens with both
    for command in commands:
        handled = (command.startswith(("make ", "snakemake ", ".venv/bin/snakemake ", "python -m calmix.config ", "calmix-verify",
                                        "calmix-plan"))
                   or any(key in command for key in NOT_RUN_HERE) or command.startswith("python3 -m venv"))
        assert handled, f"README command not covered by tests/test_readme.py: {command}"
    assert "../shared" not in README  # the repository carries its own docs


def test_commands_not_run_here_are_what_the_makefile_and_ci_run():
    makefile = (REPO / "Makefile").read_text()
    assert "pip install --quiet -c constraints.txt -e '.[test]'" in makefile
    assert re.search(r"^test: .*\n\t\$\(VENV\)/bin/pytest -q -n 2 --dist loadfile tests$", makefile, flags=re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize("command", [c for c in readme_commands(README)
                                     if c.startswith("make ") and c != "make test" and not c.startswith("make plan")])
def test_make_targets_name_one_study_in_every_snakemake_call(clone, command):
    config = re.search(r"CONFIG=(\S+)", command)
    config = config.group(1) if config else "config.yaml"
    calls = make_commands(command, clone)
    assert calls, command
    for call in calls:
        assert f"--configfile {config}" in call, (command, call)
    if command.startswith("make run"):
        assert any("--report results/report.html" in call for call in calls)
        study = next(call for call in calls if "--report" not in call)
        expected = documented_job_counts(README).get(command)
        assert expected is not None, f"README table has no job count for {command}"
        result = run(dry_run(study), clone)
        assert result.returncode == 0, result.stderr[-3000:]
        assert planned_total(result.stdout) == expected, command


@pytest.mark.parametrize("command", [c for c in readme_commands(README)
                                     if c.startswith(("snakemake ", ".venv/bin/snakemake "))])
def test_snakemake_commands_plan_what_the_readme_says(clone, command):
    if "--unlock" in command:
        result = run(command, clone)
        assert result.returncode == 0, result.stderr[-3000:]
        return
    if any(key in command for key in NOT_RUN_HERE):
        pytest.skip(NOT_RUN_HERE[next(key for key in NOT_RUN_HERE if key in command)])
    result = run(dry_run(command), clone)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (clone / "results").exists()
    expected = documented_job_counts(README).get(command)
    if expected is not None:
        assert planned_total(result.stdout) == expected, command


def test_each_config_is_read_alone(clone):
    """--configfile replaces config.yaml: the tiny study plans none of the default study's sources."""
    result = run("snakemake -n --configfile experiments/world-tiny.yaml", clone)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "results/corpora/web.jsonl" in result.stdout
    assert "results/corpora/encyclopedia.jsonl" not in result.stdout  # a source of config.yaml only
    paper = run("snakemake -n --configfile experiments/paper-llama3.1-8b.yaml", clone)
    assert paper.returncode == 0, paper.stderr[-3000:]
    assert "train_world_model" not in paper.stdout  # the built-in world is not part of the paper's study


def test_without_config_yaml_the_message_says_what_to_name(tmp_path):
    result = run(f"snakemake -n -s {REPO / 'Snakefile'}", tmp_path)
    assert result.returncode != 0
    assert "no config.yaml in" in result.stderr and "--configfile experiments/" in result.stderr


@pytest.mark.parametrize("command", [c for c in readme_commands(README) if c.startswith("python -m calmix.config ")])
def test_config_check_accepts_the_config_it_is_shown_with(clone, command):
    result = run(command.replace("python ", f"{VENV_BIN / 'python'} ", 1), clone)
    assert result.returncode == 0 and result.stdout.startswith("config OK"), result.stderr


@pytest.mark.parametrize("command", [c for c in readme_commands(README) if c.startswith("calmix-verify")])
def test_verify_without_a_study_says_where_to_run_it(clone, command):
    """In a fresh clone there is no results/ yet (tests/test_verify_workflow.py checks a real tree)."""
    result = run(command, clone)
    assert result.returncode == 2 and "run it in the study's working directory" in result.stderr, result.stderr


@pytest.mark.parametrize("command", [c for c in readme_commands(README) if c.startswith(("make plan", "calmix-plan"))])
def test_plan_commands_count_the_jobs_snakemake_plans(clone, command):
    """The plan's job total is Snakemake's own for the same study, all of it left to run in a fresh clone."""
    if command.startswith("make "):
        result = run(command.replace("make ", "make -n ", 1), clone)
        assert result.returncode == 0, result.stderr
        [command] = [line.strip().removeprefix(".venv/bin/") for line in result.stdout.splitlines() if "calmix-plan" in line]
    configfiles = re.search(r"--configfile ((?:\S+ ?)+)", command)
    study = f"snakemake -n --configfile {configfiles.group(1) if configfiles else 'config.yaml'}"
    result = run(command, clone)
    assert result.returncode == 0, result.stderr[-3000:]
    total = re.search(r"^total\s+(\d+)\s+(\d+)$", result.stdout, flags=re.M)
    assert total and total.group(1) == total.group(2), result.stdout
    assert int(total.group(1)) == planned_total(run(study, clone).stdout)
    assert re.search(r"^  disk: checkpoints (kept|temporary): peak", result.stdout, flags=re.M)
