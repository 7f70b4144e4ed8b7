"""Temporary checkpoints (pruning.keep_checkpoints: false): removed once their evaluation is done,
pruned again when a rerun needs one, their prune report kept; a rerun of a finished study prunes nothing."""

import json

import pytest
import yaml

from conftest import TINY, snakemake, write_config

pytestmark = pytest.mark.workflow

CHECKPOINT = "results/pruned/world/wanda/0.5/web/seed0"
REPORT = "results/prune_reports/world/wanda/0.5/web/seed0.json"
EVALS = [f"results/eval/world/wanda/0.5/web/seed0/{d}.json" for d in ("general", "perplexity")]
LOG = "logs/prune_and_evaluate/world/wanda/0.5/web.log"  # the set's job: seeds 0 and 1


def _config(workdir, **general):
    config = yaml.safe_load(TINY.read_text())
    config["pruning"]["keep_checkpoints"] = False
    config["evaluation"]["dimensions"]["general"].update(general)
    return write_config(workdir / "temporary.yaml", config)


def _run(workdir, config, *args):
    result = snakemake(workdir, *EVALS, *args, configfile=config)
    assert result.returncode == 0, result.stderr[-5000:]
    return result.stdout + result.stderr


def test_a_temporary_checkpoint_is_removed_after_its_evaluation_and_rebuilt_when_a_rerun_needs_it(finished):
    weights = json.loads((finished / CHECKPOINT / "prune_report.json").read_text())["weights_sha256"]
    config = _config(finished)
    _run(finished, config, f"--forcerun={EVALS[0]}")  # the job runs: its checkpoint goes afterwards
    assert not (finished / CHECKPOINT).exists()
    log = (finished / LOG).read_text()  # report and records current: nothing pruned, nothing scored
    assert "nothing pruned" in log and "layer 1/2" not in log and f"removed the temporary checkpoint {CHECKPOINT}" in log
    assert json.loads((finished / REPORT).read_text())["weights_sha256"] == weights  # report and digest kept
    perplexity = (finished / EVALS[1]).read_bytes()

    assert "Nothing to be done" in _run(finished, config, "-n")  # a finished study prunes nothing again

    out = _run(finished, _config(finished, limit=5))  # one dimension edited: its evaluation needs the checkpoint
    log = (finished / LOG).read_text()
    assert "rule prune_and_evaluate:" in out and "layer 2/2" in log and f"removed the temporary checkpoint {CHECKPOINT}" in log
    assert not (finished / CHECKPOINT).exists()
    assert json.loads((finished / REPORT).read_text())["weights_sha256"] == weights  # the same weights again
    assert json.loads((finished / EVALS[0]).read_text())["tasks"]["world_general"]["n"] == 5
    assert (finished / EVALS[1]).read_bytes() == perplexity  # the other dimension's record kept as it was
