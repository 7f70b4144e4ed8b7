"""Gather per-shard metrics into one table, one row per calibration set."""

import pandas as pd

from calmix.io import read_json
from calmix.logs import setup_logging
from calmix.io import write_table

setup_logging(snakemake.log[0])
table = pd.DataFrame([read_json(p) for p in snakemake.input]).sort_values(["model", "calib", "seed"])
write_table(table.reset_index(drop=True), snakemake.output.csv.removesuffix(".csv"))
