"""Download the data of a dimension's lm-eval built-in tasks, so that evaluation jobs run offline."""

from typing import cast

from calmix.fetch.task_data import fetch_task_data
from calmix.core.io import write_json
from calmix.core.logs import setup_logging
from calmix.core.records import TaskDataManifest

setup_logging(snakemake.log[0])
write_json(snakemake.output[0], cast(TaskDataManifest, fetch_task_data(snakemake.params.tasks)))
