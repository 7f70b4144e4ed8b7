"""OIT information metrics of a calibration set, computed on the exact token windows used for pruning.

The paper's formulas are not public; calmix defines its own family. Each metric is one registered
function of (windows, context) -> float, where windows is an int array (nsamples, seqlen) and the
context gives the tokenizer and, lazily, the dense model's per-token losses. Definitions:

- perplexity: exp of the mean next-token negative log-likelihood under the dense model, over every
  predicted token of every window (seqlen - 1 per window).
- ppl_spread: standard deviation (population) over windows of each window's log-perplexity.
- ngram4_aggregation: share of 4-gram occurrences, pooled over all windows (4-grams never cross a
  window boundary), that fall on 4-grams occurring more than once in the pool.
- token_entropy: Shannon entropy in bits of the pooled unigram token distribution.
- distinct_2: distinct 2-grams / 2-gram occurrences, pooled.
- compression_ratio: bytes of the decoded windows (joined by newlines) / bytes after zlib level 9.
- vocab_coverage: distinct token ids in the set / tokenizer vocabulary size.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from functools import cached_property

import numpy as np

from calmix.calibration import ngrams
from calmix.calibration.likelihood import token_nll

METRICS: dict[str, Callable[[np.ndarray, "MetricContext"], float]] = {}


def metric(name: str):
    """Register a metric function under name."""

    def register(fn):
        METRICS[name] = fn
        return fn

    return register


class MetricContext:
    """What metrics may need besides the windows; the model pass is computed once, on demand."""

    def __init__(self, windows: np.ndarray, tokenizer, model=None, batch_size: int = 16) -> None:
        self.windows, self.tokenizer, self.model, self.batch_size = windows, tokenizer, model, batch_size

    @cached_property
    def token_nll(self) -> np.ndarray:
        """Per-token negative log-likelihood (nsamples, seqlen - 1) under the dense model, float64."""
        if self.model is None:
            raise ValueError("this metric needs the dense model; pass model= to compute_metrics")
        return token_nll(self.model, self.windows, self.batch_size)


@metric("perplexity")
def perplexity(windows: np.ndarray, ctx: MetricContext) -> float:
    return float(math.exp(ctx.token_nll.mean()))


@metric("ppl_spread")
def ppl_spread(windows: np.ndarray, ctx: MetricContext) -> float:
    return float(ctx.token_nll.mean(axis=1).std())


@metric("ngram4_aggregation")
def ngram4_aggregation(windows: np.ndarray, ctx: MetricContext) -> float:
    return ngrams.ngram4_aggregation(windows)


@metric("token_entropy")
def token_entropy(windows: np.ndarray, ctx: MetricContext) -> float:
    _, counts = np.unique(windows, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


@metric("distinct_2")
def distinct_2(windows: np.ndarray, ctx: MetricContext) -> float:
    counts = ngrams.ngram_counts(windows, 2)
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


@metric("compression_ratio")
def compression_ratio(windows: np.ndarray, ctx: MetricContext) -> float:
    raw = "\n".join(ctx.tokenizer.batch_decode(windows.tolist())).encode()
    return len(raw) / len(zlib.compress(raw, 9))


@metric("vocab_coverage")
def vocab_coverage(windows: np.ndarray, ctx: MetricContext) -> float:
    return len(np.unique(windows)) / len(ctx.tokenizer)


def compute_metrics(
    windows: np.ndarray, names: list[str], tokenizer, model=None, batch_size: int = 16,
) -> dict[str, float]:
    """The named metrics of one calibration set, in the order given; ``batch_size`` windows per forward
    pass of the model (config ``calibration.metrics_batch_size``)."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise KeyError(f"unknown metrics {unknown}; registered: {sorted(METRICS)}")
    ctx = MetricContext(windows, tokenizer, model, batch_size)
    return {name: METRICS[name](windows, ctx) for name in names}
