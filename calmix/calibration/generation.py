"""Seeded, batched, KV-cached sampling from a causal LM, and per-sequence scores of what it wrote.

``generate`` runs ``model.generate(do_sample=True)`` (KV cache on, generate's default) with a
``LogitsProcessorList`` that calmix builds in full, in this order:

1. repetition penalty (``RepetitionPenaltyLogitsProcessor``; like Hugging Face and vLLM it also
   penalises tokens of the prompt), when given;
2. EOS ban: every end-of-sequence id (``eos_id`` and those of the model's config and generation
   config) is suppressed at every generated position (``SuppressTokensLogitsProcessor``), so each
   sequence has exactly ``length`` tokens, never ends early and is never padded;
3. temperature: a constant (``TemperatureLogitsWarper``) or a ``TemperatureSchedule``;
4. top-k, then top-p (``TopKLogitsWarper``, ``TopPLogitsWarper``), when given;
5. ``RowSampler``: draws the token of every row from that row's own random stream and hands
   ``generate`` a one-hot distribution, so generate's own sampling (global RNG) can only pick it.

The model's ``generation_config`` (a hub model's ``temperature: 0.6, top_p: 0.9`` and the like) is
set aside for the call: every sampling knob comes from the arguments.

Determinism: the random stream of prompt ``i`` is seeded from ``(seed, i)``
(``numpy.random.SeedSequence(seed, spawn_key=(i,))``), so the same seed gives the same tokens on
the same hardware and software, and a row does not depend on which other rows share its batch
(batch size, order of batches) as long as the model's logits for a row do not depend on the batch
shape. On CPU float32 that holds in practice (the tests check it); on GPUs batched kernels may
change logits in the last bits, which can flip a draw that falls within that distance of a boundary
between two tokens' probability intervals (rare, but the guarantee there is "same seed and batch
size -> same tokens").

Prompts of different lengths are never padded: prompts are grouped by length (each group in input
order) and each group is generated in batches of its own, so no padding or attention mask enters.

Scores (``score_sequences``): perplexity of each sequence over its generated part only (exp of the
mean next-token NLL of the tokens after the prompt, from ``calmix.calibration.likelihood.token_nll``)
and 4-gram aggregation of the whole sequence (``calmix.calibration.ngrams.ngram4_aggregation`` on that one
sequence: the share of its 4-gram occurrences that fall on 4-grams occurring more than once in it).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from calmix.calibration.likelihood import token_nll
from calmix.calibration.ngrams import ngram4_aggregation


@dataclass(frozen=True)
class TemperatureSchedule:
    """Temperature of the i-th generated token (i = 0 for the first token after the prompt).

    ``t(i) = t_initial + (t_final - t_initial) * min(i, schedule_tokens) / schedule_tokens``: linear
    from t_initial (first token) to t_final (token ``schedule_tokens``), then t_final; with
    ``schedule_tokens = 0`` every token is sampled at t_final. This is Self-Cal's schedule (Williams,
    Chrysostomou & Aletras, NAACL 2025, Sec. 3.2). Their default values could not be looked up where
    calmix is developed; the defaults here are calmix's choice: a hot start (2.0) that varies the
    openings, the model's own distribution (1.0) after the first 20 tokens.
    """

    t_initial: float = 2.0
    t_final: float = 1.0
    schedule_tokens: int = 20

    def __post_init__(self):
        if self.t_initial <= 0 or self.t_final <= 0:
            raise ValueError(f"temperatures must be > 0, got t_initial={self.t_initial}, t_final={self.t_final}")
        if self.schedule_tokens < 0:
            raise ValueError(f"schedule_tokens must be >= 0, got {self.schedule_tokens}")

    def at(self, step: int) -> float:
        if self.schedule_tokens == 0:
            return float(self.t_final)
        frac = min(step, self.schedule_tokens) / self.schedule_tokens
        return float(self.t_initial + (self.t_final - self.t_initial) * frac)

    def record(self) -> dict:
        return {"kind": "linear_schedule", **asdict(self)}


class ScheduledTemperatureWarper(LogitsProcessor):
    """Divides the logits by ``schedule.at(step)``, step = tokens generated after a prompt of prompt_len."""

    def __init__(self, schedule: TemperatureSchedule, prompt_len: int) -> None:
        self.schedule, self.prompt_len = schedule, prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores / self.schedule.at(input_ids.shape[1] - self.prompt_len)


class RowSampler(LogitsProcessor):
    """Samples each row's next token from its own generator; returns one-hot logits (0 there, -inf elsewhere).

    Inverse-CDF sampling in float64: one uniform draw per row and step from ``torch.Generator``
    seeded with ``seeds[row]``, the token whose cumulative-probability interval holds it.
    """

    def __init__(self, seeds: Sequence[int]) -> None:
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.generators):
            raise RuntimeError(f"RowSampler has {len(self.generators)} streams but got {scores.shape[0]} rows")
        cdf = torch.softmax(scores.double(), dim=-1).cumsum(-1)
        u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in self.generators])
        target = (u.to(cdf.device) * cdf[:, -1]).unsqueeze(1)
        tokens = torch.searchsorted(cdf, target, right=True).clamp_(max=scores.shape[-1] - 1)
        out = torch.full_like(scores, -math.inf)
        return out.scatter_(1, tokens, 0.0)


def row_seeds(seed: int, rows: Sequence[int]) -> list[int]:
    """The 64-bit seed of each row's stream: ``SeedSequence(seed, spawn_key=(row,))``."""
    return [int(np.random.SeedSequence(seed, spawn_key=(int(r),)).generate_state(1, np.uint64)[0]) for r in rows]


def banned_eos_ids(model, eos_id: int | None) -> list[int]:
    """Every end-of-sequence id that generation bans: eos_id and the model's configured ones."""
    ids = set()
    configured = (getattr(model.config, "eos_token_id", None), getattr(model.generation_config, "eos_token_id", None))
    for value in (eos_id, *configured):
        if value is None:
            continue
        ids.update([value] if isinstance(value, int) else list(value))
    return sorted(int(i) for i in ids)


def logits_processors(
    model, *, prompt_len: int, seeds: Sequence[int], temperature: float | TemperatureSchedule,
    top_k: int | None, top_p: float | None, repetition_penalty: float | None, banned: Sequence[int],
) -> LogitsProcessorList:
    """The full processor list of one batch (see the module docstring for the order); banned: EOS ids."""
    procs = LogitsProcessorList()
    if repetition_penalty is not None and repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if banned:
        procs.append(SuppressTokensLogitsProcessor(list(banned), device=model.device))
    if isinstance(temperature, TemperatureSchedule):
        procs.append(ScheduledTemperatureWarper(temperature, prompt_len))
    elif temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    elif temperature != 1.0:
        procs.append(TemperatureLogitsWarper(float(temperature)))
    if top_k is not None and top_k > 0:
        procs.append(TopKLogitsWarper(int(top_k)))
    if top_p is not None and top_p < 1.0:
        procs.append(TopPLogitsWarper(float(top_p)))
    procs.append(RowSampler(seeds))
    return procs


@contextlib.contextmanager
def _neutral_generation_config(model):
    """Set the model's generation_config aside so none of its sampling defaults enter generate."""
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


def generate(
    model, prompts: Sequence[Sequence[int]], *, length: int, seed: int, batch_size: int = 8,
    temperature: float | TemperatureSchedule = 1.0, top_k: int | None = None, top_p: float | None = None,
    repetition_penalty: float | None = None, eos_id: int | None = None,
) -> np.ndarray:
    """Sample ``length`` tokens per prompt (prompt included): int64 array [len(prompts), length].

    Each row starts with its prompt and continues with ``length - len(prompt)`` sampled tokens; no
    EOS is ever sampled (it is banned, see the module docstring). Knobs: ``temperature`` a constant
    or a ``TemperatureSchedule``; ``top_k``/``top_p``/``repetition_penalty`` off when None.
    """
    prompts = [[int(t) for t in p] for p in prompts]
    if not prompts:
        return np.zeros((0, length), dtype=np.int64)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = sorted({len(p) for p in prompts})
    if lengths[0] < 1:
        raise ValueError("every prompt needs at least one token (e.g. BOS)")
    if lengths[-1] > length:
        raise ValueError(f"a prompt of {lengths[-1]} tokens is longer than the requested length {length}")
    out = np.zeros((len(prompts), length), dtype=np.int64)
    device = model.device
    banned = banned_eos_ids(model, eos_id)  # before the model's generation_config is set aside
    pad_id = (banned or [0])[0]  # never written: no row ends early
    with torch.no_grad(), _neutral_generation_config(model):
        for plen in lengths:
            rows = [i for i, p in enumerate(prompts) if len(p) == plen]
            for start in range(0, len(rows), batch_size):
                batch = rows[start:start + batch_size]
                x = torch.tensor([prompts[i] for i in batch], dtype=torch.long, device=device)
                if plen == length:
                    out[batch] = x.cpu().numpy()
                    continue
                procs = logits_processors(
                    model, prompt_len=plen, seeds=row_seeds(seed, batch), temperature=temperature, top_k=top_k,
                    top_p=top_p, repetition_penalty=repetition_penalty, banned=banned,
                )
                config = GenerationConfig(
                    do_sample=True, max_new_tokens=length - plen, temperature=1.0, top_k=0, top_p=1.0,
                    use_cache=True, pad_token_id=pad_id,
                )
                y = model.generate(
                    input_ids=x, attention_mask=torch.ones_like(x), generation_config=config, logits_processor=procs,
                )
                if y.shape != (len(batch), length):
                    raise RuntimeError(f"generate returned shape {tuple(y.shape)}, expected {(len(batch), length)}")
                out[batch] = y.cpu().numpy()
    return out


def score_sequences(
    model, sequences: np.ndarray, *, prompt_len: int | Sequence[int], batch_size: int = 8,
) -> dict[str, np.ndarray]:
    """Per-sequence ``perplexity`` (over the tokens after the prompt) and ``ngram4_aggregation``.

    sequences: int array [n, L]; prompt_len: one length for all rows or one per row (>= 1; the
    first token is never predicted). Returns float64 arrays of length n.
    """
    sequences = np.asarray(sequences, dtype=np.int64)
    n, seqlen = sequences.shape
    plen = np.broadcast_to(np.asarray(prompt_len, dtype=np.int64), (n,))
    if (plen < 1).any() or (plen >= seqlen).any():
        raise ValueError(f"prompt lengths must lie in [1, {seqlen - 1}] so that a generated token remains")
    nll = token_nll(model, sequences, batch_size)  # [n, L-1]; column j predicts token j+1
    generated = np.arange(seqlen - 1)[None, :] >= (plen[:, None] - 1)
    ppl = np.exp((nll * generated).sum(1) / generated.sum(1))
    agg = np.array([ngram4_aggregation(row[None, :]) for row in sequences], dtype=np.float64)
    return {"perplexity": ppl, "ngram4_aggregation": agg}
