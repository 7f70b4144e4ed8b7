"""Per-item scores of one evaluation, the file beside each eval record (general.json ->
general.items.parquet): what the retention intervals resample."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from calmix.core.io import atomic_path
from calmix.core.records import ItemScore

#: Columns of the per-item parquet file, in order: the fields of the record a row is.
ITEM_COLUMNS = tuple(ItemScore.__annotations__)


def write_items(items: list[dict], path: str | Path) -> None:
    """Per-item scores as zstd parquet, written atomically: task, leaf, doc_id, score, weight (1.0 for
    mean-aggregated tasks; the word or byte count for perplexity tasks, whose score is the item's total
    log-likelihood) and gold_prob (a multiple-choice item's normalised probability of the gold choice,
    calmix.evaluation.scoring.gold_probability; NaN for other items). Items without a weight get 1.0."""
    types = {"task": pa.string(), "leaf": pa.string(), "doc_id": pa.int64(), "score": pa.float64(),
             "weight": pa.float64(), "gold_prob": pa.float64()}
    missing = {"weight": 1.0, "gold_prob": float("nan")}
    table = pa.table({
        k: pa.array([r.get(k, missing[k]) if k in missing else r[k] for r in items], types[k]) for k in ITEM_COLUMNS
    })
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_items(path: str | Path):
    """The per-item scores of one evaluation as a DataFrame (ITEM_COLUMNS; gold_prob NaN in files written
    before it was kept)."""
    table = pd.read_parquet(path)
    if "gold_prob" not in table:
        table["gold_prob"] = float("nan")
    return table[list(ITEM_COLUMNS)]
