"""Gather per-shard metrics into one table, one row per calibration set."""

import pandas as pd

from calmix.core.io import read_json
from calmix.core.logs import setup_logging
from calmix.core.io import write_table

setup_logging(snakemake.log[0])
table = pd.DataFrame([read_json(p) for p in snakemake.input]).sort_values(["model", "calib", "seed"])
write_table(table.reset_index(drop=True), snakemake.output.csv.removesuffix(".csv"))
