"""Write one world task's held-out evaluation items as jsonl for lm-eval."""

import json

from calmix.io import atomic_path
from calmix.logs import setup_logging
from calmix.world import World

setup_logging(snakemake.log[0])
items = World(snakemake.params.seed).eval_items(snakemake.wildcards.task, snakemake.params.n, seed=0)
with atomic_path(snakemake.output[0]) as tmp:
    tmp.write_text("".join(json.dumps(item) + "\n" for item in items))
