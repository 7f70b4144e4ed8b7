"""Calibration sets the model writes itself: Self-Cal, SGS and IGSP.

Each builder is two phases, so the workflow can cache the expensive one: :func:`generate_pool`
writes the scored candidate pool with the model (prompts, pool size, sampling; per-candidate
perplexity and 4-gram aggregation from ``calmix.calibration.generation.score_sequences``), and
:func:`select_windows` picks the windows from it, a pure function of the pool and the selection
knobs. Changing a selection knob therefore reruns only the selection. Every candidate is one window of exactly ``seqlen`` tokens, prompt included, so the
selected candidates are the shard's windows. Every function returns, beside its result, a
JSON-serialisable record of the values it used and the counts it saw, for the shard's manifest.

* **Self-Cal** (Williams, Chrysostomou & Aletras, NAACL 2025): ``nsamples`` sequences from the BOS
  token alone (EOS where the tokenizer has no BOS), sampled with a ``TemperatureSchedule``; the pool
  is exactly ``nsamples`` and all of it is kept.
* **SGS** (Ji et al., ICLR 2025, "self-generating then sampling"): prompts are the first
  ``prefix_tokens`` (2) tokens of documents of a source, after the BOS; continuations sampled with
  top-k 50, top-p 0.95, temperature 0.6, repetition penalty 1.2 (the values of the authors'
  ``generate_data.py``); the ``filter_quantile`` (0.2) share of the pool with the highest
  perplexity over the generated tokens is dropped (their ``sample_ppl.py`` keeps perplexity below
  the 80th percentile); ``nsamples`` are drawn at random, without replacement, from the rest. Pool:
  ``ceil(nsamples / (1 - filter_quantile))`` unless a larger ``pool_size`` is configured. calmix
  generates each candidate at exactly ``seqlen`` tokens, so a candidate is one window (the authors
  generate longer texts and cut windows from them).
* **IGSP** (calmix's reconstruction of the paper's protocol, whose exact procedure is not public):
  ``pool_size`` (default ``pool_factor`` x nsamples = 4 x nsamples) sequences generated like
  Self-Cal's; candidates whose own 4-gram aggregation exceeds ``repetition_threshold`` are dropped;
  the rest are split by perplexity rank into ``strata`` strata of equal size (one per capability
  dimension by default: the caller passes that number); every stratum gets an equal quota; the set
  is filled greedily, each step taking, among the candidates of strata whose quota is not yet
  filled, the one that leaves the selected set's pooled 4-gram aggregation
  (``calmix.calibration.metrics.ngram4_aggregation`` over all selected windows) lowest.

Seeds: generation draws row ``i`` from ``SeedSequence(seed, spawn_key=(i,))`` (see
``calmix.calibration.generation``); document picking uses ``default_rng([seed, 1])`` and selection
``default_rng([seed, 2])``. Selection functions are pure: same inputs and seed, same indices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from calmix.calibration.generation import TemperatureSchedule, generate, score_sequences
from calmix.calibration.metrics import ngram4_aggregation

PROMPT_STREAM, SELECTION_STREAM = 1, 2

# SGS sampling (Ji et al. 2025, generate_data.py: SamplingParams(temperature=0.6, top_p=0.95,
# repetition_penalty=1.2, top_k=50)).
SGS_SAMPLING = {"temperature": 0.6, "top_k": 50, "top_p": 0.95, "repetition_penalty": 1.2}


def _check_positive(**values) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def start_token(bos_id: int | None, eos_id: int | None) -> tuple[int, str]:
    """The token a self-generated sequence starts from: BOS, or EOS (the document separator) without one."""
    if bos_id is not None:
        return int(bos_id), "bos"
    if eos_id is not None:
        return int(eos_id), "eos"
    raise ValueError("self-generation needs a start token, but the tokenizer has neither BOS nor EOS")


def _sampling_record(temperature, top_k, top_p, repetition_penalty) -> dict:
    return {
        "temperature": temperature.record() if isinstance(temperature, TemperatureSchedule) else float(temperature),
        "top_k": top_k, "top_p": top_p, "repetition_penalty": repetition_penalty, "eos": "banned",
    }


# --------------------------------------------------------------------------------------------
# Self-Cal
# --------------------------------------------------------------------------------------------


def selfcal_pool_size(nsamples: int) -> int:
    """Self-Cal generates exactly the windows it keeps."""
    _check_positive(nsamples=nsamples)
    return nsamples


def select_selfcal(n_candidates: int, *, nsamples: int) -> tuple[np.ndarray, dict]:
    """Keep the whole pool, which must hold exactly nsamples candidates."""
    if n_candidates != selfcal_pool_size(nsamples):
        raise ValueError(f"Self-Cal keeps its whole pool: it needs exactly {nsamples} candidates, got {n_candidates}")
    return np.arange(n_candidates), {"pool_size": n_candidates, "selected": n_candidates}


# --------------------------------------------------------------------------------------------
# SGS
# --------------------------------------------------------------------------------------------


def _sgs_drop_count(pool: int, filter_quantile: float) -> int:
    return int(math.floor(filter_quantile * pool + 1e-9))


def sgs_pool_size(nsamples: int, *, filter_quantile: float = 0.2, pool_size: int | None = None) -> int:
    """Smallest pool that leaves nsamples after the filter, ceil(nsamples / (1 - q)); or pool_size if larger."""
    _check_positive(nsamples=nsamples)
    if not 0 <= filter_quantile < 1:
        raise ValueError(f"filter_quantile must lie in [0, 1), got {filter_quantile}")
    size = max(nsamples, math.ceil(nsamples / (1 - filter_quantile) - 1e-9))
    while size - _sgs_drop_count(size, filter_quantile) < nsamples:  # guard against float rounding
        size += 1
    if pool_size is not None and pool_size < size:
        raise ValueError(
            f"SGS pool_size {pool_size} is too small: dropping {filter_quantile:g} of it must leave nsamples={nsamples}, "
            f"which needs at least {size} candidates; raise pool_size or lower filter_quantile"
        )
    return max(size, pool_size or 0)


def sgs_prompts(
    documents: Sequence[Sequence[int]], n: int, *, seed: int, prefix_tokens: int = 2, bos_id: int | None = None,
) -> tuple[list[list[int]], dict]:
    """n prompts: the first prefix_tokens tokens of documents drawn at random (seeded), BOS in front.

    Documents shorter than prefix_tokens are skipped (a leading BOS does not count as a token of the
    document). Documents are drawn without replacement while there are enough, else with replacement.
    """
    _check_positive(n=n, prefix_tokens=prefix_tokens)
    docs = [np.asarray(d, dtype=np.int64) for d in documents]
    docs = [d[1:] if bos_id is not None and len(d) and d[0] == bos_id else d for d in docs]
    eligible = np.array([i for i, d in enumerate(docs) if len(d) >= prefix_tokens], dtype=np.int64)
    if not len(eligible):
        raise ValueError(f"SGS: no document of the source has {prefix_tokens} tokens (prefix_tokens) to start from")
    rng = np.random.default_rng([seed, PROMPT_STREAM])
    replace = len(eligible) < n
    picked = rng.choice(eligible, size=n, replace=replace)
    head = [] if bos_id is None else [int(bos_id)]
    prompts = [head + [int(t) for t in docs[d][:prefix_tokens]] for d in picked]
    record = {
        "prefix_tokens": prefix_tokens, "bos": bos_id is not None, "documents": len(docs),
        "eligible_documents": int(len(eligible)), "with_replacement": bool(replace),
        "prompt_documents": [int(d) for d in picked],
    }
    return prompts, record


def select_sgs(
    perplexity: Sequence[float], *, nsamples: int, seed: int, filter_quantile: float = 0.2,
) -> tuple[np.ndarray, dict]:
    """Drop the floor(q x pool) candidates of highest perplexity, then draw nsamples of the rest at random.

    Ties in perplexity are broken by pool index (the later one is dropped first). Returns the chosen
    pool indices in the order drawn.
    """
    ppl = np.asarray(perplexity, dtype=np.float64)
    pool = len(ppl)
    drop = _sgs_drop_count(pool, filter_quantile)
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


# --------------------------------------------------------------------------------------------
# IGSP
# --------------------------------------------------------------------------------------------


def igsp_pool_size(nsamples: int, *, pool_factor: float = 4.0, pool_size: int | None = None) -> int:
    """pool_size if given, else ceil(pool_factor x nsamples); never fewer than nsamples."""
    _check_positive(nsamples=nsamples)
    size = pool_size if pool_size is not None else math.ceil(pool_factor * nsamples - 1e-9)
    if size < nsamples:
        raise ValueError(f"IGSP pool_size {size} is smaller than nsamples={nsamples}; raise pool_size or pool_factor")
    return int(size)


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
    _check_positive(nsamples=nsamples, strata=strata)
    if len(ppl) != pool:
        raise ValueError(f"{pool} candidates but {len(ppl)} perplexities")
    agg = (np.array([ngram4_aggregation(row[None, :], None) for row in tokens]) if ngram4 is None
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
        "pooled_ngram4_aggregation": float(ngram4_aggregation(tokens[chosen], None)),
        "kept_pool_ngram4_aggregation": float(ngram4_aggregation(tokens[kept], None)),
        "tie_break": "lowest pool index",
    }
    return chosen, record


# --------------------------------------------------------------------------------------------
# The two phases, by builder kind
# --------------------------------------------------------------------------------------------

#: Knobs of the pool phase (generation) and of the selection phase, with their defaults.
GENERATION_KNOBS = {
    "selfcal": {"t_initial": 2.0, "t_final": 1.0, "schedule_tokens": 20},
    "sgs": {"prefix_tokens": 2, "pool_size": None, **SGS_SAMPLING},
    "igsp": {"pool_size": None, "pool_factor": 4.0, "t_initial": 2.0, "t_final": 1.0, "schedule_tokens": 20,
             "top_k": None, "top_p": None, "repetition_penalty": None},
}
SELECTION_KNOBS = {
    "selfcal": {},
    "sgs": {"filter_quantile": 0.2},
    "igsp": {"strata": 4, "repetition_threshold": 0.5},
}


def pool_size(kind: str, nsamples: int, generation: dict, selection: dict) -> int:
    """How many candidates a builder generates (SGS's depends on its filter quantile unless pool_size is set)."""
    if kind == "selfcal":
        return selfcal_pool_size(nsamples)
    if kind == "sgs":
        return sgs_pool_size(nsamples, filter_quantile=selection["filter_quantile"], pool_size=generation["pool_size"])
    return igsp_pool_size(nsamples, pool_factor=generation["pool_factor"], pool_size=generation["pool_size"])


def generate_pool(
    kind: str, model, *, size: int, seqlen: int, seed: int, bos_id: int | None, eos_id: int | None,
    batch_size: int = 8, documents: Sequence[Sequence[int]] | None = None, **knobs,
) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """(candidates int64 [size, seqlen], their scores, a record) for builder ``kind`` with its generation
    knobs (GENERATION_KNOBS); SGS needs ``documents``, the token ids of its prefix source."""
    knobs = {**GENERATION_KNOBS[kind], **knobs}
    record: dict = {"builder": kind, "seed": seed, "pool_size": size, "seqlen": seqlen}
    if kind == "sgs":
        if documents is None:
            raise ValueError("SGS needs the documents of its prefix source")
        prompts, record["prompts"] = sgs_prompts(documents, size, seed=seed, prefix_tokens=knobs["prefix_tokens"],
                                                 bos_id=bos_id)
        temperature = knobs["temperature"]
        record["perplexity_over"] = "generated tokens (after the prompt)"
    else:
        start, record["start_token"] = start_token(bos_id, eos_id)
        prompts = [[start]] * size
        temperature = TemperatureSchedule(knobs["t_initial"], knobs["t_final"], knobs["schedule_tokens"])
    top_k, top_p, penalty = (knobs.get(k) for k in ("top_k", "top_p", "repetition_penalty"))
    pool = generate(model, prompts, length=seqlen, seed=seed, batch_size=batch_size, temperature=temperature,
                    top_k=top_k, top_p=top_p, repetition_penalty=penalty, eos_id=eos_id)
    scores = score_sequences(model, pool, prompt_len=[len(p) for p in prompts], batch_size=batch_size)
    record["sampling"] = _sampling_record(temperature, top_k, top_p, penalty)
    return pool, {k: np.asarray(v, float) for k, v in scores.items()}, record


def select_windows(kind: str, pool: np.ndarray, scores: dict[str, np.ndarray], *, nsamples: int, seed: int,
                   **knobs) -> tuple[np.ndarray, dict]:
    """Indices of the pool's candidates that become the shard's windows, in window order, and a record
    of the selection (with each window's perplexity and 4-gram aggregation)."""
    knobs = {**SELECTION_KNOBS[kind], **knobs}
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
