"""calmix.evaluation.packed.PackedLM against lm-eval's own HFLM (the oracle) on the same requests.

Tiny random decoders (a LLaMA: rotary positions, tied head; a GPT-2: learned positions, Conv1D) with a
small byte-level BPE tokenizer; requests shaped like the study's: multiple-choice items whose choices share
a context (multi-token and one-token choices), greedy continuations (is_greedy true), contexts longer
than the model's window (left truncation), whole documents by rolling log-likelihood.
"""

from __future__ import annotations

import random

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from calmix.evaluation.packed import PackedLM

WORDS = "the a cat dog sat ran on under mat tree big small red blue one two three four plus is what answer".split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _save_model(path, kind: str) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(0)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_text(rng, 12) for _ in range(200)], trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, bos_token_id=0, eos_token_id=1, tie_word_embeddings=True))
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(hf_tok), n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                           bos_token_id=0, eos_token_id=1))
    model.save_pretrained(path)
    hf_tok.save_pretrained(path)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model_dir(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    _save_model(path, request.param)
    return str(path)


def _requests(lm: HFLM, rng: random.Random) -> list:
    pairs = []
    for _ in range(9):  # multiple choice: four choices after one question, some of one token
        context = f"Question: {_text(rng, rng.randint(3, 12))}\nAnswer:"
        pairs += [(context, " " + _text(rng, rng.randint(1, 3))) for _ in range(4)]
        pairs.append((context, " " + rng.choice(WORDS)))
    requests = [((c, x), *lm._encode_pair(c, x)) for c, x in pairs]
    for context in ("one plus two is", "the cat sat on the"):  # the model's own greedy continuation: is_greedy true
        ids = lm.tok_encode(context)
        with torch.no_grad():
            greedy = lm.model(torch.tensor([ids])).logits[0, -1].argmax().item()
        requests.append(((context, lm.tok_decode([greedy])), ids, [greedy]))
    return requests


def _score(cls, model_dir: str, batch_size: int, max_length: int | None = None):
    lm = cls(pretrained=model_dir, batch_size=batch_size, device="cpu", dtype="float32",
             **({"max_length": max_length} if max_length else {}))
    requests = _requests(lm, random.Random(1))
    docs = [_text(random.Random(i), 150) for i in range(3)]
    # (lm-eval 0.4.13's own rolling windows overrun a max_length this small: rolling at the model's length only)
    rolling = [] if max_length else lm.loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, (d,), i) for i, d in enumerate(docs)], disable_tqdm=True)
    return lm._loglikelihood_tokens(requests, disable_tqdm=True), rolling


@pytest.mark.parametrize("max_length", [None, 40])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_packed_scores_are_hflms(model_dir, batch_size, max_length):
    expected, expected_rolling = _score(HFLM, model_dir, 1, max_length)
    got, rolling = _score(PackedLM, model_dir, batch_size, max_length)
    assert len(got) == len(expected)
    assert [g for _, g in got] == [g for _, g in expected]
    assert any(g for _, g in expected)  # the greedy continuations are there
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in expected], rel=1e-5, abs=1e-4)
    assert rolling == pytest.approx(expected_rolling, rel=1e-5, abs=1e-4)


def test_choices_of_one_context_are_read_in_one_row(model_dir, monkeypatch):
    """Nine questions of five choices and two greedy contexts: 11 rows, the tokens read fewer than HFLM's."""
    lm = PackedLM(pretrained=model_dir, batch_size=64, device="cpu", dtype="float32")
    requests = _requests(lm, random.Random(1))
    seen = []
    call = lm._call
    monkeypatch.setattr(lm, "_call", lambda tokens, *a: seen.append(tokens.shape) or call(tokens, *a))
    lm._loglikelihood_tokens(requests, disable_tqdm=True)
    assert len(seen) == 1 and seen[0][0] == 11
    hflm_tokens = sum(len(c) + len(x) - 1 for _, c, x in requests)
    assert seen[0][0] * seen[0][1] < hflm_tokens
