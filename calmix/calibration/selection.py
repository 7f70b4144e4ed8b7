"""Choosing a self-generated set's windows from its cached candidate pool (rule select_windows): pure
functions of the pool, its scores and the selection knobs, so changing a selection knob never reruns
the generation. The recipes are described in calmix.calibration.selfgen and docs/definitions.md.

Selection draws from ``default_rng([seed, 2])``: same inputs and seed, same indices. No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calmix.calibration.builders import KINDS, check_positive, selfcal_pool_size, sgs_drop_count, sgs_pool_size
from calmix.calibration.ngrams import ngram4_aggregation

SELECTION_STREAM = 2


def select_selfcal(n_candidates: int, *, nsamples: int) -> tuple[np.ndarray, dict]:
    """Keep the whole pool, which must hold exactly nsamples candidates."""
    if n_candidates != selfcal_pool_size(nsamples):
        raise ValueError(f"Self-Cal keeps its whole pool: it needs exactly {nsamples} candidates, got {n_candidates}")
    return np.arange(n_candidates), {"pool_size": n_candidates, "selected": n_candidates}

def select_sgs(
    perplexity: Sequence[float], *, nsamples: int, seed: int, filter_quantile: float = 0.2,
) -> tuple[np.ndarray, dict]:
    """Drop the floor(q x pool) candidates of highest perplexity, then draw nsamples of the rest at random.

    Ties in perplexity are broken by pool index (the later one is dropped first). Returns the chosen
    pool indices in the order drawn.
    """
    ppl = np.asarray(perplexity, dtype=np.float64)
    pool = len(ppl)
    drop = sgs_drop_count(pool, filter_quantile)
    if pool - drop < nsamples:
        raise ValueError(
            f"SGS: the pool has {pool} candidates; dropping the {drop} of highest perplexity (filter_quantile "
            f"{filter_quantile:g}) leaves {pool - drop}, but nsamples={nsamples} are needed. Raise pool_size to at "
            f"least {sgs_pool_size(nsamples, filter_quantile=filter_quantile)} or lower filter_quantile"
        )
    order = np.lexsort((np.arange(pool), ppl))  # ascending perplexity, then index
    kept, dropped = np.sort(order[:pool - drop]), order[pool - drop:]
    rng = np.random.default_rng([seed, SELECTION_STREAM])
    chosen = rng.choice(kept, size=nsamples, replace=False)
    record = {
        "pool_size": pool, "filter_quantile": filter_quantile, "dropped_high_perplexity": int(drop),
        "kept": int(len(kept)), "selected": nsamples,
        "max_kept_perplexity": float(ppl[kept].max()),
        "min_dropped_perplexity": float(ppl[dropped].min()) if drop else None,
    }
    return chosen, record

def _bounds(total: int, parts: int) -> np.ndarray:
    """floor(s x total / parts) for s = 0..parts: equal shares, the remainder spread evenly."""
    return np.array([s * total // parts for s in range(parts + 1)], dtype=np.int64)

def _quotas(sizes: np.ndarray, nsamples: int) -> tuple[np.ndarray, list[dict]]:
    """Equal quotas per stratum; a stratum with too few candidates hands its shortfall to its nearest neighbours."""
    quotas = np.diff(_bounds(nsamples, len(sizes)))
    borrowed = []
    for s in range(len(sizes)):
        short = int(quotas[s] - sizes[s])
        if short <= 0:
            continue
        quotas[s] = sizes[s]
        for d in range(1, len(sizes)):
            for t in (s - d, s + d):  # nearest first; the lower-perplexity neighbour first
                if short and 0 <= t < len(sizes) and sizes[t] > quotas[t]:
                    take = min(short, int(sizes[t] - quotas[t]))
                    quotas[t] += take
                    short -= take
                    borrowed.append({"stratum": s, "filled_from": t, "count": take})
    return quotas, borrowed

def _ngram4_ids(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct 4-grams of each candidate as (candidate, 4-gram id, count) triples, sorted by candidate."""
    n, seqlen = tokens.shape
    width = max(seqlen - 3, 0)
    if width == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    grams = np.lib.stride_tricks.sliding_window_view(tokens, 4, axis=1).reshape(n * width, 4)
    distinct, gram_id = np.unique(grams, axis=0, return_inverse=True)
    key = np.repeat(np.arange(n, dtype=np.int64), width) * len(distinct) + gram_id.reshape(-1)
    pairs, counts = np.unique(key, return_counts=True)
    return pairs // len(distinct), pairs % len(distinct), counts

def _greedy_low_aggregation(tokens: np.ndarray, stratum: np.ndarray, quotas: np.ndarray) -> list[int]:
    """Greedy fill of every stratum's quota keeping the pooled 4-gram aggregation lowest.

    stratum: the stratum of every candidate, -1 for candidates out of the running. Ties go to the
    lowest pool index. The pooled share is (occurrences on 4-grams seen more than once) / (all
    occurrences); every candidate has the same number of 4-grams, so the numerator decides.
    """
    cand, gram, count = _ngram4_ids(tokens)
    selected_counts = np.zeros(int(gram.max()) + 1 if len(gram) else 0, dtype=np.int64)
    offsets = np.searchsorted(cand, np.arange(len(tokens) + 1))
    left = quotas.astype(np.int64).copy()
    chosen: list[int] = []
    taken = np.zeros(len(tokens), dtype=bool)

    def repeated(x):
        return np.where(x > 1, x, 0)

    for _ in range(int(quotas.sum())):
        before = selected_counts[gram]
        gain = np.bincount(cand, repeated(before + count) - repeated(before), minlength=len(tokens))
        open_ = (stratum >= 0) & ~taken
        open_[open_] = left[stratum[open_]] > 0
        gain = np.where(open_, gain, np.inf)
        best = int(np.argmin(gain))
        chosen.append(best)
        taken[best] = True
        left[stratum[best]] -= 1
        mine = slice(offsets[best], offsets[best + 1])  # cand is sorted: each candidate's triples are one run
        selected_counts[gram[mine]] += count[mine]
    return chosen

def select_igsp(
    tokens: np.ndarray, perplexity: Sequence[float], *, nsamples: int, strata: int = 4,
    repetition_threshold: float = 0.5, ngram4: Sequence[float] | None = None,
) -> tuple[np.ndarray, dict]:
    """IGSP's selection over a candidate pool: indices into the pool (in the order picked) and a record.

    tokens: int array [pool, seqlen]; perplexity: per candidate; ngram4: per-candidate 4-gram
    aggregation (computed from tokens when None). repetition_threshold is absolute: a candidate whose
    own 4-gram aggregation exceeds it is dropped. Absolute rather than a quantile, because the filter
    is there to drop degenerate loops: a quantile would drop a fixed share of a clean pool and keep
    loops in a pool full of them. Default 0.5: drop a candidate when more than half of its 4-gram
    occurrences repeat one another (natural text of a few thousand tokens stays far below that).
    Strata: the kept candidates sorted by (perplexity, index), cut into ``strata`` runs of equal size
    (sizes differ by at most one). Quotas: floor((s+1) n / k) - floor(s n / k), equal up to one.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    ppl = np.asarray(perplexity, dtype=np.float64)
    pool = len(tokens)
    check_positive(nsamples=nsamples, strata=strata)
    if len(ppl) != pool:
        raise ValueError(f"{pool} candidates but {len(ppl)} perplexities")
    agg = (np.array([ngram4_aggregation(row[None, :]) for row in tokens]) if ngram4 is None
           else np.asarray(ngram4, dtype=np.float64))
    keep = agg <= repetition_threshold
    kept = np.flatnonzero(keep)
    if len(kept) < nsamples:
        raise ValueError(
            f"IGSP: {len(kept)} candidates remain of a pool of {pool} after dropping {pool - len(kept)} whose 4-gram "
            f"aggregation exceeds repetition_threshold={repetition_threshold:g}, but nsamples={nsamples} are needed; "
            f"raise the IGSP builder's pool_size (or pool_factor) or its repetition_threshold"
        )
    k = min(strata, len(kept))
    order = kept[np.lexsort((kept, ppl[kept]))]
    bounds = _bounds(len(kept), k)
    stratum = np.full(pool, -1, dtype=np.int64)
    for s in range(k):
        stratum[order[bounds[s]:bounds[s + 1]]] = s
    sizes = np.diff(bounds)
    quotas, borrowed = _quotas(sizes, nsamples)
    chosen = np.array(_greedy_low_aggregation(tokens, stratum, quotas), dtype=np.int64)
    picked = np.bincount(stratum[chosen], minlength=k)
    record = {
        "pool_size": pool, "repetition_threshold": repetition_threshold, "repetition_threshold_kind": "absolute",
        "dropped_repetitive": int(pool - len(kept)), "kept": int(len(kept)), "selected": nsamples,
        "strata_requested": strata,
        "strata": [
            {
                "stratum": s, "candidates": int(sizes[s]), "quota": int(quotas[s]), "selected": int(picked[s]),
                "perplexity_min": float(ppl[order[bounds[s]]]), "perplexity_max": float(ppl[order[bounds[s + 1] - 1]]),
            }
            for s in range(k)
        ],
        "borrowed": borrowed,
        "pooled_ngram4_aggregation": float(ngram4_aggregation(tokens[chosen])),
        "kept_pool_ngram4_aggregation": float(ngram4_aggregation(tokens[kept])),
        "tie_break": "lowest pool index",
    }
    return chosen, record

def select_windows(kind: str, pool: np.ndarray, scores: dict[str, np.ndarray], *, nsamples: int, seed: int,
                   **knobs) -> tuple[np.ndarray, dict]:
    """Indices of the pool's candidates that become the shard's windows, in window order, and a record
    of the selection (with each window's perplexity and 4-gram aggregation)."""
    knobs = {**KINDS[kind].selection, **knobs}
    if kind == "selfcal":
        chosen, record = select_selfcal(len(pool), nsamples=nsamples)
    elif kind == "sgs":
        chosen, record = select_sgs(scores["perplexity"], nsamples=nsamples, seed=seed, **knobs)
    else:
        chosen, record = select_igsp(pool, scores["perplexity"], nsamples=nsamples,
                                     ngram4=scores["ngram4_aggregation"], **knobs)
    chosen = np.asarray(chosen)
    return chosen, {
        "selection": record,
        "pool_indices": [int(i) for i in chosen],
        "window_perplexity": [float(scores["perplexity"][i]) for i in chosen],
        "window_ngram4_aggregation": [float(scores["ngram4_aggregation"][i]) for i in chosen],
    }
