"""Spearman rho of every OIT metric with every dimension's retention, across the single sources."""

import logging

import pandas as pd

from calmix.analysis.correlation import correlation_table
from calmix.analysis.intervals import Bootstrap
from calmix.core.io import write_table
from calmix.core.logs import setup_logging

setup_logging(snakemake.log[0])
corr = correlation_table(
    pd.read_parquet(snakemake.input.metrics),
    pd.read_parquet(snakemake.input.retention),
    calibs=snakemake.params.single_sources,
    boot=Bootstrap(**snakemake.params.bootstrap),
    settings={tuple(s) for s in snakemake.params.swept},
)
write_table(corr, snakemake.output.csv.removesuffix(".csv"))
logging.info("%d correlations over %d sources; %d with q < 0.05", len(corr), len(snakemake.params.single_sources),
             int((corr["q"] < 0.05).sum()))
