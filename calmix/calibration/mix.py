"""Multi-source mixes: a calibration set made of windows drawn from the single sources' own shards.

A mix of seed k draws from the sources' shards of seed k, so its windows are exactly windows the
single-source study pruned with (same sampling, same BOS policy), and a mix differs from its sources
only in proportion. Counts are exact: each source gets floor(n * w / W) windows and the windows left
over go to the largest remainders (Hamilton's method), ties broken by a seeded order. Which windows a
source gives, and the order of the mixed set, are seeded by (seed, mix, source), so changing one
source's weight moves no other source's choice beyond its count.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from calmix.calibration.shards import read_shard, write_shard
from calmix.core.records import ShardManifest
from calmix.core.stats import keyed_rng

log = logging.getLogger(__name__)


def mix_weights(spec_sources: list[str] | dict[str, float] | None, sources: list[str]) -> dict[str, float]:
    """Weights by source from a mix spec: a list (uniform), a mapping (weights) or None (every source)."""
    if spec_sources is None:
        spec_sources = list(sources)
    if isinstance(spec_sources, dict):
        weights = {s: float(w) for s, w in spec_sources.items()}
    else:
        weights = {s: 1.0 for s in spec_sources}
    unknown = [s for s in weights if s not in sources]
    if unknown:
        raise ValueError(f"mix sources {unknown} are not calibration sources ({', '.join(sources)})")
    bad = {s: w for s, w in weights.items() if not (w > 0 and math.isfinite(w))}
    if bad or not weights:
        raise ValueError(f"mix weights must be positive and finite, got {bad or weights}")
    return weights


def mix_counts(weights: dict[str, float], nsamples: int, seed: int, name: str = "mix") -> dict[str, int]:
    """Exact window counts per source summing to nsamples (largest remainders, seeded tie-break)."""
    total = sum(weights.values())
    quotas = {s: nsamples * w / total for s, w in weights.items()}
    counts = {s: math.floor(q) for s, q in quotas.items()}
    left = nsamples - sum(counts.values())
    tie_break = keyed_rng(seed, name, "remainders").permutation(len(weights))
    order = sorted(zip(weights, tie_break), key=lambda st: (-(quotas[st[0]] - counts[st[0]]), st[1]))
    for source, _ in order[:left]:
        counts[source] += 1
    return counts


def build_mix(shards: dict[str, str | Path], *, weights: dict[str, float], nsamples: int, seqlen: int,
              seed: int, name: str, spec: dict[str, Any], path: str | Path) -> ShardManifest:
    """Draw the mix's windows from each source's shard (same seed) and write it as a shard (its manifest
    has ShardManifest's mix keys: weights, counts, source_shards, window_sources)."""
    counts = mix_counts(weights, nsamples, seed, name)
    windows, provenance, spans, record_ids, source_shas = [], [], [], [], {}
    for source, count in counts.items():
        if count == 0:
            continue
        shard = shards[source]
        pool, source_manifest = read_shard(shard)  # checked: an integrity error names a missing or damaged shard
        if pool.shape[1] != seqlen:
            raise ValueError(f"{shard}: windows of {pool.shape[1]} tokens, but mix {name!r} needs {seqlen}")
        if count > len(pool):
            raise ValueError(f"mix {name!r} needs {count} windows of source {source!r}, whose shard {shard} has "
                             f"{len(pool)}; raise calibration.nsamples or lower its weight")
        source_shas[source] = source_manifest["sha256"]
        chosen = np.sort(keyed_rng(seed, name, source).choice(len(pool), size=count, replace=False))
        for i in chosen:
            windows.append(pool[i])
            provenance.append([source, int(i)])
            spans.append(source_manifest["windows"][i])
            record_ids.append(source_manifest["record_ids"][i])
    order = keyed_rng(seed, name, "order").permutation(len(windows))
    manifest = write_shard(np.stack([windows[i] for i in order]), path, {
        "source": name,
        "kind": "mix",
        "spec": spec,
        "seed": seed,
        "nsamples": nsamples,
        "seqlen": seqlen,
        "weights": weights,
        "counts": counts,
        "source_shards": source_shas,
        "window_sources": [provenance[i] for i in order],
        "windows": [spans[i] for i in order],
        "record_ids": [record_ids[i] for i in order],
    })
    log.info("mix %s: %s -> %s", name, ", ".join(f"{s} {c}" for s, c in counts.items()), path)
    return manifest
