"""Write one world task's held-out evaluation items as jsonl for lm-eval."""

import json

from calmix.core.io import atomic_path
from calmix.core.logs import setup_logging
from calmix.world.domain import World

setup_logging(snakemake.log[0])
items = World(snakemake.params.seed).eval_items(snakemake.wildcards.task, snakemake.params.n, seed=0)
with atomic_path(snakemake.output[0]) as tmp:
    tmp.write_text("".join(json.dumps(item) + "\n" for item in items))
