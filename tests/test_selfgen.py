"""calmix.calibration.selfgen: Self-Cal, SGS and IGSP selection on hand-built pools, and each builder end to end."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from test_generation import BOS, EOS, tiny_llama

from calmix.calibration.generation import TemperatureSchedule, generate
from calmix.calibration.metrics import ngram4_aggregation
from calmix.calibration.builders import KINDS, SGS_SAMPLING, igsp_pool_size, selfcal_pool_size, sgs_pool_size
from calmix.calibration.selection import select_igsp, select_selfcal, select_sgs, select_windows
from calmix.calibration.selfgen import generate_pool, sgs_prompts, start_token


def build(kind, model, *, nsamples, seqlen, seed, generation=None, selection=None, documents=None, batch_size=8):
    """Both phases, as the workflow's generate_pool and select_windows rules run them."""
    generation = {**KINDS[kind].generation, **(generation or {})}
    selection = {**KINDS[kind].selection, **(selection or {})}
    size = KINDS[kind].pool_size(nsamples, generation, selection)
    pool, scores, record = generate_pool(kind, model, size=size, seqlen=seqlen, seed=seed, bos_id=BOS, eos_id=EOS,
                                         batch_size=batch_size, documents=documents, **generation)
    chosen, chosen_record = select_windows(kind, pool, scores, nsamples=nsamples, seed=seed, **selection)
    return pool[chosen], {**record, **chosen_record}

SEQLEN = 32


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_llama()
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# Self-Cal
# --------------------------------------------------------------------------------------------


def test_selfcal_keeps_exactly_its_pool():
    assert selfcal_pool_size(7) == 7
    chosen, record = select_selfcal(7, nsamples=7)
    assert chosen.tolist() == list(range(7)) and record == {"pool_size": 7, "selected": 7}
    with pytest.raises(ValueError, match="exactly 7 candidates, got 8"):
        select_selfcal(8, nsamples=7)
    assert start_token(None, EOS) == (EOS, "eos") and start_token(BOS, EOS) == (BOS, "bos")


def test_build_selfcal_generates_from_bos_with_the_schedule(model):
    schedule = TemperatureSchedule(t_initial=1.8, t_final=0.7, schedule_tokens=8)
    knobs = {"t_initial": 1.8, "t_final": 0.7, "schedule_tokens": 8}
    windows, record = build("selfcal", model, nsamples=5, seqlen=SEQLEN, seed=4, generation=knobs, batch_size=2)
    assert windows.shape == (5, SEQLEN) and (windows[:, 0] == BOS).all() and not (windows[:, 1:] == EOS).any()
    expected = generate(model, [[BOS]] * 5, length=SEQLEN, seed=4, batch_size=5, temperature=schedule, eos_id=EOS)
    assert (windows == expected).all()
    assert record["sampling"]["temperature"] == {
        "kind": "linear_schedule", "t_initial": 1.8, "t_final": 0.7, "schedule_tokens": 8,
    }
    assert record["start_token"] == "bos" and record["pool_indices"] == list(range(5))
    json.dumps(record)
    again, _ = build("selfcal", model, nsamples=5, seqlen=SEQLEN, seed=4, generation=knobs)
    assert (again == windows).all()


# --------------------------------------------------------------------------------------------
# SGS
# --------------------------------------------------------------------------------------------


def test_sgs_pool_size_rule():
    assert sgs_pool_size(128) == 160 and sgs_pool_size(10) == 13 and sgs_pool_size(5, filter_quantile=0) == 5
    assert sgs_pool_size(10, pool_size=40) == 40
    for n in range(1, 200):
        for q in ("0.1", "0.2", "0.3", "0.5"):
            size = sgs_pool_size(n, filter_quantile=float(q))
            assert size == math.ceil(n / (1 - Fraction(q)))  # exactly, whatever the float rounding
            assert size - math.floor(size * Fraction(q)) >= n  # what the filter leaves is enough
    with pytest.raises(ValueError, match="pool_size 11 is too small.*at least 13"):
        sgs_pool_size(10, pool_size=11)


def test_sgs_filter_drops_exactly_the_top_quantile_and_draws_seeded():
    rng = np.random.default_rng(0)
    ppl = rng.permutation(np.arange(1.0, 51.0))  # 50 distinct perplexities
    chosen, record = select_sgs(ppl, nsamples=30, seed=7, filter_quantile=0.2)
    assert record["dropped_high_perplexity"] == 10 and record["kept"] == 40 and record["pool_size"] == 50
    assert len(chosen) == 30 and len(set(chosen.tolist())) == 30
    assert ppl[chosen].max() <= 40 and record["max_kept_perplexity"] == 40 and record["min_dropped_perplexity"] == 41
    again, _ = select_sgs(ppl, nsamples=30, seed=7)
    other, _ = select_sgs(ppl, nsamples=30, seed=8)
    assert again.tolist() == chosen.tolist() and other.tolist() != chosen.tolist()
    # all that survive, when nsamples is exactly what the filter leaves
    everything, _ = select_sgs(ppl, nsamples=40, seed=1)
    assert sorted(everything.tolist()) == sorted(np.flatnonzero(ppl <= 40).tolist())
    # ties: the later index goes first
    tied, record = select_sgs([1.0, 5.0, 5.0, 2.0, 3.0], nsamples=4, seed=0)
    assert sorted(tied.tolist()) == [0, 1, 3, 4] and record["dropped_high_perplexity"] == 1
    with pytest.raises(ValueError, match="leaves 40, but nsamples=41.*at least 52"):
        select_sgs(ppl, nsamples=41, seed=0)


def test_sgs_prompts_take_document_prefixes_after_bos():
    docs = [[BOS, 10, 11, 12], [20], [30, 31, 32], [40, 41]]
    prompts, record = sgs_prompts(docs, 3, seed=0, prefix_tokens=2, bos_id=BOS)
    assert sorted(map(tuple, prompts)) == [(BOS, 10, 11), (BOS, 30, 31), (BOS, 40, 41)]
    assert record["eligible_documents"] == 3 and not record["with_replacement"]
    assert sorted(record["prompt_documents"]) == [0, 2, 3]
    many, record = sgs_prompts(docs, 7, seed=0, bos_id=None)
    assert record["with_replacement"] and all(p == docs[d][:2] for p, d in zip(many, record["prompt_documents"]))
    assert sgs_prompts(docs, 7, seed=0)[0] == many and sgs_prompts(docs, 7, seed=1)[0] != many
    with pytest.raises(ValueError, match="no document"):
        sgs_prompts([[1], [2]], 2, seed=0, prefix_tokens=2)


def test_build_sgs(model):
    docs = [list(range(5 + i, 25 + i)) for i in range(20)]
    windows, record = build("sgs", model, nsamples=6, seqlen=SEQLEN, seed=3, documents=docs, batch_size=4)
    pool = record["selection"]["pool_size"]
    assert windows.shape == (6, SEQLEN) and pool == 8 and record["selection"]["dropped_high_perplexity"] == 1
    prompts = [[BOS] + docs[d][:2] for d in record["prompts"]["prompt_documents"]]
    assert [w[:3].tolist() for w in windows] == [prompts[i] for i in record["pool_indices"]]
    assert record["sampling"] == {**SGS_SAMPLING, "eos": "banned"}
    json.dumps(record)


# --------------------------------------------------------------------------------------------
# IGSP
# --------------------------------------------------------------------------------------------


def igsp_pool(seed: int, diverse: int = 30, shared: int = 30, loops: int = 10):
    """Candidates of SEQLEN tokens: diverse (unique tokens), shared (the same four 8-token phrases in a
    random order: no repeats inside one, many across them) and loops (a 2-token cycle, dropped)."""
    rng = np.random.default_rng(seed)
    rows = [rng.choice(10**6, SEQLEN, replace=False) for _ in range(diverse)]
    phrases = rng.choice(10**6, (4, 8), replace=False) + 2 * 10**6
    rows += [phrases[rng.permutation(4)].reshape(-1) for _ in range(shared)]
    rows += [np.tile(rng.choice(10**6, 2, replace=False) + 3 * 10**6, SEQLEN // 2) for _ in range(loops)]
    order = rng.permutation(len(rows))
    return np.stack(rows)[order], rng.uniform(2, 50, len(rows))


def test_igsp_beats_random_subsets_and_fills_every_stratum():
    for seed in range(4):
        tokens, ppl = igsp_pool(seed)
        chosen, record = select_igsp(tokens, ppl, nsamples=12, strata=3)
        assert len(chosen) == 12 == len(set(chosen.tolist()))
        assert record["dropped_repetitive"] == 10 and record["kept"] == 60
        kept = np.flatnonzero([ngram4_aggregation(t[None], None) <= 0.5 for t in tokens])
        assert not set(chosen.tolist()) - set(kept.tolist())
        ours = ngram4_aggregation(tokens[chosen], None)
        assert ours == record["pooled_ngram4_aggregation"]
        rng = np.random.default_rng(100 + seed)
        randoms = [ngram4_aggregation(tokens[rng.choice(kept, 12, replace=False)], None) for _ in range(20)]
        assert ours < min(randoms), (seed, ours, randoms)
        # every perplexity stratum (equal-size runs of the kept candidates by perplexity) holds its quota
        ranks = kept[np.argsort(ppl[kept], kind="stable")]
        stratum = {int(c): s for s, run in enumerate(np.array_split(ranks, 3)) for c in run}
        assert np.bincount([stratum[int(c)] for c in chosen], minlength=3).tolist() == [4, 4, 4]
        assert [(s["candidates"], s["quota"], s["selected"]) for s in record["strata"]] == [(20, 4, 4)] * 3
        assert record["borrowed"] == []
        json.dumps(record)
        assert select_igsp(tokens, ppl, nsamples=12, strata=3)[0].tolist() == chosen.tolist()


def test_igsp_greedy_step_is_the_lowest_pooled_aggregation():
    rng = np.random.default_rng(5)
    tokens = rng.integers(0, 6, size=(15, 12))  # a small alphabet: plenty of shared 4-grams
    chosen, _ = select_igsp(tokens, np.ones(15), nsamples=6, strata=1, repetition_threshold=1.0)
    selected: list[int] = []
    for pick in chosen:
        values = {c: ngram4_aggregation(tokens[selected + [c]], None) for c in range(15) if c not in selected}
        best = min(values.values())
        assert pick == min(c for c, v in values.items() if v == best)
        selected.append(int(pick))


def test_igsp_quotas_remainder_and_neighbour_fill():
    tokens, ppl = igsp_pool(0, diverse=10, shared=0, loops=0)
    _, record = select_igsp(tokens, ppl, nsamples=10, strata=3)
    assert [s["quota"] for s in record["strata"]] == [s["selected"] for s in record["strata"]] == [3, 3, 4]
    # 8 candidates in 5 strata of sizes 1, 2, 1, 2, 2 against quotas 1, 1, 2, 1, 2: stratum 2 is one short
    tokens, ppl = igsp_pool(1, diverse=8, shared=0, loops=0)
    chosen, record = select_igsp(tokens, ppl, nsamples=7, strata=5)
    assert [s["candidates"] for s in record["strata"]] == [1, 2, 1, 2, 2]
    assert [s["selected"] for s in record["strata"]] == [1, 2, 1, 1, 2]
    assert record["borrowed"] == [{"stratum": 2, "filled_from": 1, "count": 1}]
    assert len(chosen) == 7


def test_igsp_too_small_a_pool_says_what_to_raise():
    tokens, ppl = igsp_pool(2, diverse=5, shared=0, loops=6)
    with pytest.raises(ValueError, match=r"5 candidates remain of a pool of 11 after dropping 6 .* nsamples=8 .*pool_size"):
        select_igsp(tokens, ppl, nsamples=8)
    assert igsp_pool_size(8) == 32 and igsp_pool_size(8, pool_factor=2.5) == 20 and igsp_pool_size(8, pool_size=9) == 9
    with pytest.raises(ValueError, match="smaller than nsamples"):
        igsp_pool_size(8, pool_size=7)


def test_build_igsp(model):
    windows, record = build("igsp", model, nsamples=6, seqlen=SEQLEN, seed=2, generation={"pool_factor": 2},
                            selection={"strata": 2})
    selection = record["selection"]
    assert windows.shape == (6, SEQLEN) and (windows[:, 0] == BOS).all()
    assert selection["pool_size"] == 12 and [s["selected"] for s in selection["strata"]] == [3, 3]
    assert selection["pooled_ngram4_aggregation"] == ngram4_aggregation(windows, None)
    json.dumps(record)


# --------------------------------------------------------------------------------------------
# Scoring batch: score_batch_size windows per forward pass, the same scores
# --------------------------------------------------------------------------------------------


def test_candidates_are_scored_score_batch_size_at_a_time(model, monkeypatch):
    from calmix.calibration import builders, generation

    seen = []
    real = generation.token_nll

    def spy(m, sequences, batch_size):
        seen.append(batch_size)
        return real(m, sequences, batch_size)

    monkeypatch.setattr(generation, "token_nll", spy)
    kwargs = dict(size=5, seqlen=SEQLEN, seed=0, bos_id=BOS, eos_id=EOS, batch_size=4)
    pool, scores, _ = generate_pool("selfcal", model, **kwargs)
    again, rescored, _ = generate_pool("selfcal", model, score_batch_size=2, **kwargs)
    assert seen == [4, 2]  # the generation batch unless score_batch_size is given
    assert np.array_equal(pool, again) and all(np.array_equal(scores[k], rescored[k]) for k in scores)
    resolved = [builders.self_generation({"kind": "igsp", **spec}, 6, 2, "web")["score_batch_size"]
                for spec in ({}, {"batch_size": 6}, {"batch_size": 6, "score_batch_size": 3})]
    assert resolved == [8, 6, 3]
