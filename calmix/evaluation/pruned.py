"""A temporary pruned checkpoint's job: prune, score the dimensions whose records are not current, remove it.

Its own module, apart from calmix.evaluation.checkpoint and calmix.pruning.checkpoints, so that the
evaluation code (in the records' evaluation key) and the pruning code (in the prune key) each digest
only themselves: editing one never invalidates what the other made. A kept checkpoint is pruned and
scored by jobs of their own (scripts/prune.py, scripts/evaluate_pruned.py: the same prune_key,
prune_checkpoint and evaluate_checkpoint, so the keys and records are the same either way).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from calmix.core.io import write_json
from calmix.evaluation.checkpoint import evaluate_checkpoint, evaluation_context, stale_dimensions
from calmix.models.folders import model_identity
from calmix.pruning.checkpoints import current_report, prune_checkpoint, prune_key

log = logging.getLogger(__name__)


def prune_and_evaluate(
    model_dir: str | Path,
    shard: str | Path | None,
    checkpoint: str | Path,
    report_path: str | Path,
    *,
    method: str,
    target: str,
    pruning_code: dict[str, str],
    options: dict[str, Any],
    model_manifest: str | None,
    dtype: str,
    device: str,
    **evaluation: Any,
) -> dict[str, str]:
    """One temporary pruned checkpoint from dense model to records, in one process: prune it unless
    every record is current, score the dimensions whose records are not, and remove it.

    A checkpoint that is not on disk has to be pruned again to be scored: that is why pruning and
    scoring share this job. The prune report (at report_path, kept) carries the prune key
    (calmix.pruning.checkpoints) and the weights' sha256; the dense model's identity
    (calmix.models.folders.model_identity) is in the prune key and in every record's evaluation key.
    A report with the current key says what pruning would produce, so when the records are all
    current under those weights nothing is pruned or loaded. ``evaluation`` is evaluate_checkpoint's
    keyword arguments (dimensions, outputs, data, identity, context, task_dir, data_root).
    """
    dense = model_identity(model_dir, model_manifest)
    key = prune_key(dense, shard, method=method, target=target, dtype=dtype, device=device, code=pruning_code,
                    **options)
    try:
        report = current_report(report_path, key)
        context = evaluation_context(evaluation["context"], dense, dtype=dtype, device=device)
        if report is not None and not stale_dimensions(
                report["weights_sha256"], evaluation["dimensions"], evaluation["outputs"],
                data=evaluation["data"], context=context):
            log.info("%s: every record is current for prune key %s; nothing pruned", checkpoint, key[:12])
            return {name: "kept" for name in evaluation["dimensions"]}
        pruned = prune_checkpoint(model_dir, shard, checkpoint, method=method, target=target, dtype=dtype,
                                  device=device, model_manifest=model_manifest, key=key, **options)
        if report != pruned:
            write_json(report_path, pruned)
        return evaluate_checkpoint(checkpoint, dtype=dtype, device=device, model_manifest="prune_report.json",
                                   dense_model=dense, **evaluation)
    finally:
        if Path(checkpoint).exists():
            shutil.rmtree(checkpoint)
            log.info("removed the temporary checkpoint %s (pruning.keep_checkpoints); its report stays at %s",
                     checkpoint, report_path)
