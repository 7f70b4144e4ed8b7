#!/usr/bin/env python
"""Stress run: a whole study from scratch, twice, and every output of the two compared.

Each run is ``snakemake --cores N`` in a fresh directory of its own, so nothing is shared but the
repository. Afterwards every file under the two ``results/`` trees must be byte-identical, except the
fields that measure the machine rather than the study (``MEASUREMENTS``: wall times and peak memory in
training and pruning reports); for those files the rest of the JSON must be equal. It prints the
number of jobs and the wall time of each run, the ratio of the second to the first, and what differed;
it exits non-zero if any result differs or a run fails.

    .venv/bin/python benchmarks/study_twice.py                    # the built-in study, --cores 2
    .venv/bin/python benchmarks/study_twice.py --first .          # reuse a finished run (make run) as run 1
    .venv/bin/python benchmarks/study_twice.py --configfile experiments/world-tiny.yaml   # minutes
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
#: JSON keys whose values are measurements of the machine (time, memory), not results of the study.
MEASUREMENTS = {"wall_time_s", "job_wall_time_s", "peak_memory_mb"}
#: Made by `snakemake --report` (as `make run` does), not by a job of the workflow; it has a timestamp.
NOT_A_RESULT = {"results/report.html"}


def run_study(workdir: Path, configfile: Path, cores: int) -> tuple[int, float]:
    """Run the study in workdir; (jobs run, wall seconds)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", str(cores),
           "--configfile", str(configfile)]
    start = time.monotonic()
    with open(workdir / "snakemake.out", "w") as out:
        result = subprocess.run(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    wall = time.monotonic() - start
    text = (workdir / "snakemake.out").read_text()
    if result.returncode != 0:
        sys.exit(f"the run in {workdir} failed (exit {result.returncode}); see {workdir / 'snakemake.out'}")
    return jobs_done(text), wall


def jobs_done(snakemake_output: str) -> int:
    """The job count of the last "N of M steps (100%) done" line (0 when nothing had to run)."""
    done = re.findall(r"^(\d+) of (\d+) steps \(100%\) done", snakemake_output, flags=re.M)
    return int(done[-1][1]) if done else 0


def without_measurements(value):
    if isinstance(value, dict):
        return {k: without_measurements(v) for k, v in value.items() if k not in MEASUREMENTS}
    if isinstance(value, list):
        return [without_measurements(v) for v in value]
    return value


def compare(first: Path, second: Path) -> tuple[int, list[str], list[str]]:
    """(identical files, files equal but for MEASUREMENTS, files that differ or exist in one run only)."""
    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in (root / "results").rglob("*") if p.is_file()} - NOT_A_RESULT

    a, b = files(first), files(second)
    identical, measured, different = 0, [], sorted(a ^ b)
    for rel in sorted(a & b):
        x, y = (first / rel).read_bytes(), (second / rel).read_bytes()
        if x == y:
            identical += 1
        elif rel.endswith(".json") and without_measurements(json.loads(x)) == without_measurements(json.loads(y)):
            measured.append(rel)
        else:
            different.append(rel)
    return identical, measured, different


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="where the runs go (default: a new temporary directory)")
    parser.add_argument("--first", type=Path, help="a directory holding a finished run of the same config to use "
                                                   "as run 1 (its job count and wall time are then not known)")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="calmix-twice-"))
    runs = []
    if args.first:
        runs.append((args.first.resolve(), None, None))
    while len(runs) < 2:
        workdir = root / f"run{len(runs) + 1}"
        if workdir.exists():
            sys.exit(f"{workdir} exists; pass an empty --workdir")
        print(f"run {len(runs) + 1}: {workdir} ...", flush=True)
        runs.append((workdir, *run_study(workdir, args.configfile.resolve(), args.cores)))
    for n, (workdir, jobs, wall) in enumerate(runs, 1):
        print(f"run {n}: {workdir}: " + ("reused" if jobs is None else f"{jobs} jobs, {wall:.0f} s"))
    if runs[0][2] is not None:
        print(f"wall time ratio run 2 / run 1: {runs[1][2] / runs[0][2]:.2f}")
    identical, measured, different = compare(runs[0][0], runs[1][0])
    print(f"{identical} files byte-identical; {len(measured)} equal but for {sorted(MEASUREMENTS)}; "
          f"{len(different)} different")
    for rel in different:
        print(f"  differs: {rel}")
    sys.exit(1 if different else 0)


if __name__ == "__main__":
    main()
