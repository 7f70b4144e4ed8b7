"""benchmarks/study_profile.py reads job times from Snakemake's log as Snakemake 9 writes it."""

import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location("study_profile", Path(__file__).parent.parent / "benchmarks" / "study_profile.py")
study_profile = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(study_profile)

LOG = """\
[Fri Dec  4 17:04:30 2026]
localrule corpus:
    output: results/corpora/a.jsonl
    jobid: 74
    reason: Missing output files: results/corpora/a.jsonl
[Fri Dec  4 17:04:31 2026]
rule prune:
    input: results/models/m, results/shards/m/a/seed0.parquet
    jobid: 3
    wildcards: model=m, method=sparsegpt, target=0.5, calib=a, seed=0
[Fri Dec  4 17:04:33 2026]
Finished jobid: 74 (Rule: corpus)
1 of 3 steps (33%) done
[Fri Dec  4 17:05:07 2026]
Finished jobid: 3 (Rule: prune)
"""


def test_job_times_pair_each_start_with_its_finish():
    assert study_profile.job_times(LOG.splitlines()) == {"corpus": [3.0], "prune": [36.0]}
