"""Token n-gram counts of windows, and the 4-gram aggregation that both the OIT metric of that name
and IGSP's selection use (one definition: docs/definitions.md). Numpy only."""

from __future__ import annotations

from collections import Counter

import numpy as np


def ngram_counts(windows: np.ndarray, n: int) -> Counter:
    """Occurrences of every n-gram, pooled over windows; n-grams never cross a window boundary."""
    counts: Counter = Counter()
    for row in windows:
        counts.update(zip(*(row[i:len(row) - n + 1 + i] for i in range(n))))
    return counts


def ngram4_aggregation(windows: np.ndarray) -> float:
    """Share of the pooled 4-gram occurrences that fall on 4-grams occurring more than once."""
    counts = ngram_counts(windows, 4)
    total = sum(counts.values())
    return sum(c for c in counts.values() if c > 1) / total if total else 0.0
