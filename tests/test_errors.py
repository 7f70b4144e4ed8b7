"""Errors a person can read: one line saying what, where and what to do, before any traceback."""

import pytest
import yaml
from conftest import TINY, snakemake, write_config

from calmix.calibration.corpora import CorpusError
from calmix.core.logs import error_line


def test_calmix_errors_read_as_their_message_and_others_by_type():
    assert error_line(CorpusError("source 'x': bad\n  record 3")) == "source 'x': bad record 3"
    assert error_line(KeyError("weights")) == "KeyError: 'weights'"
    assert error_line(RuntimeError()) == "RuntimeError: (no message)"


@pytest.mark.workflow
def test_config_error_is_one_line_naming_the_file_and_key(tmp_path):
    config = yaml.safe_load(TINY.read_text())
    config["calibration"]["nsamples"] = 0
    result = snakemake(tmp_path, "-n", configfile=write_config(tmp_path / "bad.yaml", config))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "calmix error" in line]
    assert len(errors) == 1 and "bad.yaml" in errors[0] and "config key 'calibration.nsamples'" in errors[0]
    assert "Traceback" not in result.stderr


@pytest.mark.workflow
def test_failed_job_prints_its_error_line_first_and_keeps_the_traceback_in_its_log(tmp_path):
    (tmp_path / "notes.jsonl").write_text('{"body": "hello world"}\n')
    config = yaml.safe_load(TINY.read_text())
    config["calibration"]["sources"] = {"notes": {"kind": "local", "path": "notes.jsonl"}}
    result = snakemake(tmp_path, "results/corpora/notes.jsonl",
                       configfile=write_config(tmp_path / "study.yaml", config))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    line = "calmix error: source 'notes': template field 'text' is missing from record"
    assert line in output and output.index(line) < output.index("Traceback")
    log = (tmp_path / "logs" / "corpus" / "notes.log").read_text()
    assert log.index(line) < log.index("--- traceback ---") < log.index("raise CorpusError")
    assert not (tmp_path / "results" / "corpora" / "notes.jsonl").exists()
