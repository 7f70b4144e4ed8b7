"""Calibration sets the model writes itself: Self-Cal, SGS and IGSP.

Each builder is two phases, so the workflow can cache the expensive one: :func:`generate_pool`
writes the scored candidate pool with the model (prompts, pool size, sampling; per-candidate
perplexity and 4-gram aggregation from ``calmix.calibration.generation.score_sequences``), and
:func:`calmix.calibration.selection.select_windows` picks the windows from it, a pure function of the pool and the selection
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

from collections.abc import Sequence

import numpy as np

from calmix.calibration.builders import KINDS, check_positive
from calmix.calibration.generation import TemperatureSchedule, generate, score_sequences

PROMPT_STREAM = 1


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

def sgs_prompts(
    documents: Sequence[Sequence[int]], n: int, *, seed: int, prefix_tokens: int = 2, bos_id: int | None = None,
) -> tuple[list[list[int]], dict]:
    """n prompts: the first prefix_tokens tokens of documents drawn at random (seeded), BOS in front.

    Documents shorter than prefix_tokens are skipped (a leading BOS does not count as a token of the
    document). Documents are drawn without replacement while there are enough, else with replacement.
    """
    check_positive(n=n, prefix_tokens=prefix_tokens)
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

def generate_pool(
    kind: str, model, *, size: int, seqlen: int, seed: int, bos_id: int | None, eos_id: int | None,
    batch_size: int = 8, score_batch_size: int | None = None, documents: Sequence[Sequence[int]] | None = None,
    **knobs,
) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """(candidates int64 [size, seqlen], their scores, a record) for builder ``kind`` with its generation
    knobs (builders.KINDS); SGS needs ``documents``, the token ids of its prefix source. ``batch_size``
    sequences are generated per call, ``score_batch_size`` (default: batch_size) scored per forward pass."""
    knobs = {**KINDS[kind].generation, **knobs}
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
    scores = score_sequences(model, pool, prompt_len=[len(p) for p in prompts], batch_size=score_batch_size or batch_size)
    record["sampling"] = _sampling_record(temperature, top_k, top_p, penalty)
    return pool, {k: np.asarray(v, float) for k, v in scores.items()}, record
