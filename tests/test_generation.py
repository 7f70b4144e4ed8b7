"""calmix.calibration.generation: seeded, KV-cached sampling with a tiny random LLaMA, and per-sequence scores."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from calmix.calibration.generation import (
    RowSampler,
    ScheduledTemperatureWarper,
    TemperatureSchedule,
    generate,
    logits_processors,
    score_sequences,
)
from calmix.calibration.metrics import ngram4_aggregation

BOS, EOS, VOCAB, LENGTH = 0, 1, 100, 16


def tiny_llama(vocab_size: int = VOCAB):
    """A random 2-layer LLaMA (hidden 32) with BOS 0 and EOS 1."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        bos_token_id=BOS, eos_token_id=EOS,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses time to thread hand-offs
    yield tiny_llama()
    torch.set_num_threads(threads)


@contextlib.contextmanager
def boosted(model, token: int):
    """The model with +50 on one token's logit everywhere: unbanned, every sampled token would be it."""
    handle = model.lm_head.register_forward_hook(lambda mod, args, out: out.index_add(
        -1, torch.tensor([token]), torch.full((*out.shape[:-1], 1), 50.0)))
    try:
        yield model
    finally:
        handle.remove()


def greedy_without_cache(model, prompt: list[int], length: int) -> list[int]:
    """Plain greedy decoding, the whole sequence through the model at every step, EOS banned."""
    x = torch.tensor([prompt])
    with torch.no_grad():
        while x.shape[1] < length:
            logits = model(input_ids=x, use_cache=False).logits[0, -1]
            logits[EOS] = -math.inf
            x = torch.cat([x, logits.argmax().view(1, 1)], dim=1)
    return x[0].tolist()


PROMPTS = [[BOS]] * 5 + [[BOS, 7, 8]] * 2


def test_exact_length_prompts_kept_and_no_eos(model):
    with boosted(model, EOS), torch.no_grad():
        out = generate(model, PROMPTS, length=LENGTH, seed=1, batch_size=3, temperature=0.7, eos_id=EOS)
        assert model(torch.tensor([[BOS]])).logits[0, -1].argmax() == EOS  # the hook really favours EOS
    assert out.shape == (len(PROMPTS), LENGTH) and out.dtype == np.int64
    for row, prompt in zip(out, PROMPTS):
        assert row[:len(prompt)].tolist() == prompt
    assert not (out[:, 1:] == EOS).any()


def test_eos_ids_of_the_generation_config_are_banned_too(model):
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [EOS, 2]
    try:
        with boosted(model, 2):
            out = generate(model, PROMPTS, length=LENGTH, seed=1, eos_id=None)
    finally:
        model.generation_config.eos_token_id = saved
    assert not np.isin(out[:, 1:], [EOS, 2]).any()


def test_same_seed_same_tokens_other_seed_other_tokens(model):
    kwargs = dict(length=LENGTH, batch_size=4, temperature=TemperatureSchedule(2.0, 1.0, 5), eos_id=EOS)
    a = generate(model, PROMPTS, seed=3, **kwargs)
    b = generate(model, PROMPTS, seed=3, **kwargs)
    c = generate(model, PROMPTS, seed=4, **kwargs)
    assert (a == b).all()
    assert (a != c).any()
    assert len({tuple(r) for r in a[:5]}) == 5  # rows with the same prompt draw from different streams


def test_rows_do_not_depend_on_batch_size(model):
    kwargs = dict(length=LENGTH, seed=11, temperature=1.3, top_p=0.9, repetition_penalty=1.2, eos_id=EOS)
    one = generate(model, PROMPTS, batch_size=1, **kwargs)
    for batch_size in (2, 3, 16):
        assert (generate(model, PROMPTS, batch_size=batch_size, **kwargs) == one).all()


def test_top_k_1_is_greedy_and_uses_the_kv_cache(model):
    seen = []
    handle = model.model.embed_tokens.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
    try:
        out = generate(model, PROMPTS, length=LENGTH, seed=0, batch_size=8, temperature=1.7, top_k=1, eos_id=EOS)
    finally:
        handle.remove()
    for row, prompt in zip(out, PROMPTS):
        assert row.tolist() == greedy_without_cache(model, prompt, LENGTH)
    # one forward over each prompt group, then one token per step: the KV cache is in use
    assert seen[0] == (5, 1) and all(s == (5, 1) for s in seen[1:LENGTH - 1])
    assert seen[LENGTH - 1] == (2, 3) and all(s == (2, 1) for s in seen[LENGTH:])


def test_tiny_top_p_is_greedy(model):
    out = generate(model, PROMPTS[:2], length=10, seed=5, top_p=1e-9, eos_id=EOS)
    assert out[0].tolist() == greedy_without_cache(model, [BOS], 10)


def test_model_generation_config_is_set_aside(model):
    baseline = generate(model, PROMPTS, length=LENGTH, seed=2, eos_id=EOS)
    saved = model.generation_config
    model.generation_config.top_k, model.generation_config.repetition_penalty = 1, 5.0
    try:
        assert (generate(model, PROMPTS, length=LENGTH, seed=2, eos_id=EOS) == baseline).all()
        assert model.generation_config is saved and model.generation_config.top_k == 1
    finally:
        model.generation_config.top_k, model.generation_config.repetition_penalty = None, None


def test_schedule_warper_follows_the_linear_formula():
    schedule = TemperatureSchedule(t_initial=2.0, t_final=0.5, schedule_tokens=6)
    warper = ScheduledTemperatureWarper(schedule, prompt_len=3)
    logits = torch.randn(2, VOCAB)
    for step in range(10):
        expected = 2.0 + (0.5 - 2.0) * min(step, 6) / 6
        ids = torch.zeros(2, 3 + step, dtype=torch.long)
        assert torch.allclose(warper(ids, logits), logits / expected)
        assert schedule.at(step) == pytest.approx(expected)
    assert schedule.at(0) == 2.0 and schedule.at(3) == pytest.approx(1.25) and schedule.at(6) == schedule.at(60) == 0.5
    assert TemperatureSchedule(1.5, 0.8, 0).at(0) == 0.8
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        TemperatureSchedule(0.0, 1.0, 4)


def test_processor_order(model):
    procs = logits_processors(
        model, prompt_len=1, seeds=[1, 2], temperature=TemperatureSchedule(), top_k=50, top_p=0.95,
        repetition_penalty=1.2, banned=[EOS],
    )
    assert [type(p) for p in procs] == [
        RepetitionPenaltyLogitsProcessor, SuppressTokensLogitsProcessor, ScheduledTemperatureWarper,
        TopKLogitsWarper, TopPLogitsWarper, RowSampler,
    ]


def test_row_sampler_draws_from_the_distribution():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2, 0.0]))
    rows = 4000
    picked = RowSampler(range(rows))(None, logits.expand(rows, 4).clone()).argmax(-1)
    freq = np.bincount(picked.numpy(), minlength=4) / rows
    assert freq[3] == 0
    assert np.allclose(freq[:3], [0.5, 0.3, 0.2], atol=0.03)


def test_bad_prompts_are_refused(model):
    with pytest.raises(ValueError, match="longer than the requested length"):
        generate(model, [[BOS] * 5], length=4, seed=0)
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[]], length=4, seed=0)
    assert (generate(model, [[BOS, 2, 3]], length=3, seed=0) == [[BOS, 2, 3]]).all()


def test_scores_perplexity_over_generated_part_and_per_sequence_aggregation(model):
    seqs = np.array([[BOS, 5, 6, 7, 8, 9, 5, 6, 7, 8], [BOS, 3, 4, 10, 11, 12, 13, 14, 15, 16]])
    scores = score_sequences(model, seqs, prompt_len=[3, 1])
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.from_numpy(seqs)).logits.double(), -1)
    nll = -logp[:, :-1].gather(2, torch.from_numpy(seqs)[:, 1:, None])[..., 0].numpy()
    assert scores["perplexity"][0] == pytest.approx(math.exp(nll[0, 2:].mean()), rel=1e-9)
    assert scores["perplexity"][1] == pytest.approx(math.exp(nll[1].mean()), rel=1e-9)
    assert scores["ngram4_aggregation"].tolist() == [ngram4_aggregation(s[None], None) for s in seqs]
    assert scores["ngram4_aggregation"][0] == pytest.approx(2 / 7)  # (5,6,7,8) twice among 7 occurrences
    with pytest.raises(ValueError, match="prompt lengths"):
        score_sequences(model, seqs, prompt_len=10)
