#!/usr/bin/env python
"""Where a finished study's time went: job time by rule, from Snakemake's own log of the run.

Snakemake stamps each job's start and finish (to the second) in .snakemake/log/<time>.snakemake.log
(and in what it prints). This prints, per rule, the jobs, their summed and mean wall time and their
share of all job time, then the run's wall time and the mean number of jobs running at once.

    .venv/bin/python benchmarks/study_profile.py                      # the newest log in .snakemake/log
    .venv/bin/python benchmarks/study_profile.py path/to/run.log
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def job_times(lines: list[str]) -> dict[str, list[float]]:
    """rule -> wall seconds of each of its finished jobs."""
    started: dict[str, datetime] = {}
    times: dict[str, list[float]] = defaultdict(list)
    stamp: datetime | None = None
    rule_start: datetime | None = None
    for line in lines:
        if m := STAMP.match(line):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif START.match(line):
            rule_start = stamp
        elif (m := JOBID.match(line)) and rule_start is not None:
            started[m.group(1)] = rule_start
            rule_start = None
        elif (m := FINISHED.match(line)) and m.group(1) in started and stamp is not None:
            times[m.group(2)].append((stamp - started[m.group(1)]).total_seconds())
    return times


def main() -> None:
    if len(sys.argv) > 1:
        log = Path(sys.argv[1])
    else:
        logs = sorted(Path(".snakemake/log").glob("*.snakemake.log"))
        if not logs:
            sys.exit("no Snakemake log in .snakemake/log; name one: benchmarks/study_profile.py LOG")
        log = logs[-1]
    lines = log.read_text().splitlines()
    times = job_times(lines)
    stamps = [datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y") for m in map(STAMP.match, lines) if m]
    total = sum(sum(t) for t in times.values())
    print(f"{log}: {sum(map(len, times.values()))} jobs")
    width = max(map(len, [*times, "total"])) + 1
    print(f"{'rule':<{width}}{'jobs':>6}{'job s':>10}{'mean s':>9}{'share':>8}")
    for rule, t in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        print(f"{rule:<{width}}{len(t):>6}{sum(t):>10.0f}{sum(t) / len(t):>9.1f}{sum(t) / total:>8.1%}")
    wall = (stamps[-1] - stamps[0]).total_seconds() if stamps else 0.0
    print(f"{'total':<{width}}{sum(map(len, times.values())):>6}{total:>10.0f}")
    if wall:
        print(f"wall {wall:.0f} s ({wall / 60:.1f} min); jobs running at once, on average: {total / wall:.2f}")


if __name__ == "__main__":
    main()
