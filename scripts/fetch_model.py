"""Download a hub model (weights, config, tokenizer) into the Hugging Face cache; record where, which
commit and the weights' sha256."""

from calmix.fetch.hub import fetch_model
from calmix.core.io import write_json
from calmix.core.logs import setup_logging

setup_logging(snakemake.log[0])
spec = snakemake.params.spec
write_json(snakemake.output[0], fetch_model(spec["path"], spec["revision"]))
