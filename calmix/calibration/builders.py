"""The kinds of built calibration set, as data: what each reads from its config, with defaults, and
how large a candidate pool it generates. One record per kind, read by the config check, the rules
(which knobs reach which phase, so a selection knob never reruns the generation) and the report.

Imports nothing beyond the standard library: the workflow reads it while it parses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# SGS sampling (Ji et al. 2025, generate_data.py: SamplingParams(temperature=0.6, top_p=0.95,
# repetition_penalty=1.2, top_k=50)).
SGS_SAMPLING = {"temperature": 0.6, "top_k": 50, "top_p": 0.95, "repetition_penalty": 1.2}


def check_positive(**values) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")

def selfcal_pool_size(nsamples: int) -> int:
    """Self-Cal generates exactly the windows it keeps."""
    check_positive(nsamples=nsamples)
    return nsamples

def sgs_drop_count(pool: int, filter_quantile: float) -> int:
    return int(math.floor(filter_quantile * pool + 1e-9))

def sgs_pool_size(nsamples: int, *, filter_quantile: float = 0.2, pool_size: int | None = None) -> int:
    """Smallest pool that leaves nsamples after the filter, ceil(nsamples / (1 - q)); or pool_size if larger."""
    check_positive(nsamples=nsamples)
    if not 0 <= filter_quantile < 1:
        raise ValueError(f"filter_quantile must lie in [0, 1), got {filter_quantile}")
    size = max(nsamples, math.ceil(nsamples / (1 - filter_quantile) - 1e-9))
    while size - sgs_drop_count(size, filter_quantile) < nsamples:  # guard against float rounding
        size += 1
    if pool_size is not None and pool_size < size:
        raise ValueError(
            f"SGS pool_size {pool_size} is too small: dropping {filter_quantile:g} of it must leave nsamples={nsamples}, "
            f"which needs at least {size} candidates; raise pool_size or lower filter_quantile"
        )
    return max(size, pool_size or 0)

def igsp_pool_size(nsamples: int, *, pool_factor: float = 4.0, pool_size: int | None = None) -> int:
    """pool_size if given, else ceil(pool_factor x nsamples); never fewer than nsamples."""
    check_positive(nsamples=nsamples)
    size = pool_size if pool_size is not None else math.ceil(pool_factor * nsamples - 1e-9)
    if size < nsamples:
        raise ValueError(f"IGSP pool_size {size} is smaller than nsamples={nsamples}; raise pool_size or pool_factor")
    return int(size)


@dataclass(frozen=True)
class BuilderKind:
    """A kind of built set. ``self_generated`` kinds are two phases (generate_pool, then select_windows)
    with their knobs and defaults split by phase; a mix draws from the sources' shards (rule mix)."""

    name: str
    self_generated: bool
    generation: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    extra_knobs: tuple[str, ...] = ()  # read by the rules, not by either phase's functions
    pool_size: Callable[[int, dict, dict], int] | None = None

    @property
    def knobs(self) -> set[str]:
        return {"kind", *self.generation, *self.selection, *self.extra_knobs}


KINDS: dict[str, BuilderKind] = {
    k.name: k
    for k in (
        BuilderKind("mix", False, extra_knobs=("sources",)),
        BuilderKind(
            "selfcal", True, {"t_initial": 2.0, "t_final": 1.0, "schedule_tokens": 20}, {},
            ("batch_size", "score_batch_size"), lambda n, g, s: selfcal_pool_size(n),
        ),
        BuilderKind(
            "sgs", True, {"prefix_tokens": 2, "pool_size": None, **SGS_SAMPLING}, {"filter_quantile": 0.2},
            ("batch_size", "score_batch_size", "prefix_source"),
            lambda n, g, s: sgs_pool_size(n, filter_quantile=s["filter_quantile"], pool_size=g["pool_size"]),
        ),
        BuilderKind(
            "igsp", True,
            {"pool_size": None, "pool_factor": 4.0, "t_initial": 2.0, "t_final": 1.0, "schedule_tokens": 20,
             "top_k": None, "top_p": None, "repetition_penalty": None},
            {"strata": 4, "repetition_threshold": 0.5}, ("batch_size", "score_batch_size"),
            lambda n, g, s: igsp_pool_size(n, pool_factor=g["pool_factor"], pool_size=g["pool_size"]),
        ),
    )
}


def self_generation(spec: dict[str, Any], nsamples: int, dimensions: int, baseline: str) -> dict[str, Any]:
    """A self-generated builder's resolved knobs, split by phase: {kind, size, generation, selection,
    prefix_source, batch_size, score_batch_size}. IGSP's strata default to the study's number of dimensions;
    SGS's prompts come from prefix_source, else the study's baseline source; candidates are scored
    score_batch_size at a time, else batch_size."""
    kind = KINDS[spec["kind"]]
    generation = {k: spec.get(k, v) for k, v in kind.generation.items()}
    selection = {k: spec.get(k, v) for k, v in kind.selection.items()}
    if kind.name == "igsp":
        selection["strata"] = spec.get("strata", dimensions)
    return {
        "kind": kind.name,
        "size": kind.pool_size(nsamples, generation, selection),
        "generation": generation,
        "selection": selection,
        "prefix_source": (spec.get("prefix_source") or baseline) if kind.name == "sgs" else None,
        "batch_size": spec.get("batch_size", 8),
        "score_batch_size": spec.get("score_batch_size", spec.get("batch_size", 8)),
    }
