"""The third-party code a result depends on, by version: torch and transformers compute a pruned
checkpoint's weights; lm-eval, with both, computes its scores.

Their versions enter the prune key (calmix.pruning.checkpoints.prune_key) and the evaluation key
(calmix.evaluation.checkpoint), as the job that makes the result reads them, so a rerun never keeps a
record made with another version beside one made with this one; and the rules' params
(rules/common.smk: STACK), so that an upgrade reruns those jobs at all.

Light on purpose (importlib.metadata only): the Snakefile reads it while it parses.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

#: What a pruned checkpoint's weights depend on besides calmix's own code.
PRUNING = ("torch", "transformers")
#: What a record's scores depend on besides calmix's own code.
EVALUATION = ("torch", "transformers", "lm_eval")


def package_versions(packages: Iterable[str]) -> dict[str, str | None]:
    """{package: its installed version}, None for one that is not installed (a host that only plans)."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions
