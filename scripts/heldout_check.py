"""Fail the study before any evaluation when an item of a held-out text task overlaps a document of a
calibration source (calmix.calibration.contamination); else record what was checked."""

import json
from pathlib import Path
from typing import cast

from calmix.calibration.contamination import check_heldout
from calmix.calibration.corpora import read_corpus
from calmix.core.io import write_json
from calmix.core.logs import setup_logging
from calmix.core.records import HeldoutCheckRecord

setup_logging(snakemake.log[0])
params = snakemake.params
tasks = {task: [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
         for task, path in zip(params.tasks, snakemake.input.heldout, strict=True)}
sources = ((name, read_corpus(path)) for name, path in zip(params.sources, snakemake.input.corpora, strict=True))
record = check_heldout(tasks, sources)
write_json(snakemake.output[0], cast(HeldoutCheckRecord, record))
