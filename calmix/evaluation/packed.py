"""lm-eval's HF model, scoring each context once: the choices of a multiple-choice item share one pass.

lm-eval's HFLM reads every (context, continuation) pair as its own sequence, so an item of four choices
reads its question four times, and it projects every position onto the vocabulary, the context's too.
:class:`PackedLM` scores the same requests from one row per context: the context, then each
continuation (less its last token) as a block that sees the context and itself but no other block
(a 4D attention mask and position ids that restart after the context for every block, as tree or
prefix-sharing attention does), with the vocabulary projection taken only where a continuation token is
predicted. Rows are sorted by length and ``batch_size`` of them go through the model at once.

The log-likelihoods are lm-eval's up to float rounding (the same tokens at the same positions see the
same keys; only matrix shapes differ), and is_greedy the same: tests/test_packed_lm.py checks both
against HFLM on every request type, and benchmarks/scoring.py measures the throughput of the two.
Requests of other backends (seq2seq) and ``batch_size: auto`` go to HFLM unchanged, and so does
generation.
"""

from __future__ import annotations

import inspect
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM

Request = tuple[tuple[str, str] | None, list[int], list[int]]


class _Row:
    """One context and the continuations scored from it: their request indices and where each block sits."""

    def __init__(self, context: tuple[int, ...]):
        self.context = context
        self.requests: list[int] = []
        self.continuations: list[list[int]] = []

    def __len__(self) -> int:
        return len(self.context) + sum(len(c) - 1 for c in self.continuations)

    def layout(self) -> tuple[list[int], list[int], list[int]]:
        """Token ids, position ids and block ids (0 = context, j = continuation j) of the packed row."""
        tokens, positions, blocks = list(self.context), list(range(len(self.context))), [0] * len(self.context)
        for j, cont in enumerate(self.continuations, start=1):
            tokens += cont[:-1]
            positions += range(len(self.context), len(self.context) + len(cont) - 1)
            blocks += [j] * (len(cont) - 1)
        return tokens, positions, blocks

    def predicting(self) -> list[list[int]]:
        """Per continuation, the row positions whose next-token logits predict its tokens."""
        out, start = [], len(self.context)
        for cont in self.continuations:
            out.append([len(self.context) - 1, *range(start, start + len(cont) - 1)])
            start += len(cont) - 1
        return out


class PackedLM(HFLM):
    """HFLM whose log-likelihood requests are scored one pass per context (see the module docstring)."""

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        if self.backend != "causal" or self.batch_size == "auto":
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        rows: dict[tuple[int, ...], _Row] = {}
        for i, (_, context, continuation) in enumerate(requests):
            if not context or not continuation or len(continuation) > self.max_length:
                raise ValueError(f"PackedLM: request {i} has an empty context or continuation, or a continuation "
                                 f"longer than the model's {self.max_length} tokens")
            # HFLM's left truncation: the model sees (context + continuation)[-(max_length + 1):][:-1]
            kept = tuple((context + continuation)[-(self.max_length + 1):][:-len(continuation)])
            row = rows.setdefault(kept, _Row(kept))
            row.requests.append(i)
            row.continuations.append(list(continuation))
        ordered = sorted(rows.values(), key=lambda r: (-len(r), r.context))
        step = int(override_bs or self.batch_size or 1)
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        for start in range(0, len(ordered), step):
            for index, answer in self._score_rows(ordered[start:start + step]):
                results[index] = answer
                request_str = requests[index][0]
                if request_str is not None:
                    self.cache_hook.add_partial("loglikelihood", request_str, answer)
        return results  # type: ignore[return-value]

    def _score_rows(self, rows: list[_Row]) -> list[tuple[int, tuple[float, bool]]]:
        """(request index, (log-likelihood, is_greedy)) of every continuation of these rows, one forward pass."""
        length = max(len(r) for r in rows)
        tokens = torch.zeros(len(rows), length, dtype=torch.long)
        positions = torch.zeros(len(rows), length, dtype=torch.long)
        blocks = torch.full((len(rows), length), -1, dtype=torch.long)  # -1: padding
        keep = torch.zeros(len(rows), length, dtype=torch.bool)
        for b, row in enumerate(rows):
            t, p, k = row.layout()
            tokens[b, :len(t)], positions[b, :len(p)], blocks[b, :len(k)] = torch.tensor(t), torch.tensor(p), torch.tensor(k)
            keep[b, len(row.context) - 1:len(t)] = True
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        same = (blocks[:, None, :] == 0) | (blocks[:, None, :] == blocks[:, :, None])
        allowed = causal & same & (blocks[:, None, :] >= 0)
        allowed |= torch.eye(length, dtype=torch.bool)  # a padding position sees itself: no row of -inf
        logits = self._call(tokens, positions, allowed, keep)
        logprobs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype or torch.float32)
        where = torch.full((len(rows), length), -1, dtype=torch.long)
        where[keep] = torch.arange(int(keep.sum()))
        out = []
        for b, row in enumerate(rows):
            for index, cont, at in zip(row.requests, row.continuations, row.predicting(), strict=True):
                lp = logprobs[where[b, at]]
                target = torch.tensor(cont)
                ll = lp.gather(1, target[:, None]).squeeze(1)
                out.append((index, (float(ll.sum()), bool((lp.argmax(dim=-1) == target).all()))))
        return out

    @cached_property
    def _slices_logits(self) -> bool:
        """Whether the model's forward takes ``logits_to_keep`` (read once, not per batch)."""
        return "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def _call(self, tokens: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor,
              keep: torch.Tensor) -> torch.Tensor:
        """Logits at the ``keep`` positions, flattened (positions in row order); the vocabulary projection
        only there where the model's forward takes ``logits_to_keep``, else sliced after it."""
        mask = torch.zeros(allowed.shape, dtype=self.model.dtype).masked_fill(~allowed, torch.finfo(self.model.dtype).min)
        kwargs: dict[str, Any] = {"attention_mask": mask[:, None].to(self.device),
                                  "position_ids": positions.to(self.device)}
        slices = self._slices_logits
        if slices:
            kwargs["logits_to_keep"] = keep.to(self.device)
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            logits = self.model(tokens.to(self.device), **kwargs).logits
        return (logits if slices else logits[keep.to(self.device)]).cpu()
