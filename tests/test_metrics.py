"""OIT metrics against hand-computed values."""

import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from calmix.calibration.metrics import METRICS, compute_metrics


def test_ngram4_aggregation_counts_occurrences_of_repeated_4grams():
    # 4-grams: (1,2,3,4) x2 across windows, (2,3,4,5), (2,3,4,9) once each -> 2 of 4 occurrences repeated
    windows = np.array([[1, 2, 3, 4, 5], [1, 2, 3, 4, 9]])
    assert compute_metrics(windows, ["ngram4_aggregation"], tokenizer=None) == {"ngram4_aggregation": 0.5}
    assert compute_metrics(np.array([[7] * 10]), ["ngram4_aggregation"], None)["ngram4_aggregation"] == 1.0


def test_token_entropy_and_distinct_2():
    windows = np.array([[0, 1, 2, 3], [0, 1, 2, 3]])
    values = compute_metrics(windows, ["token_entropy", "distinct_2"], None)
    assert values["token_entropy"] == pytest.approx(2.0)
    assert values["distinct_2"] == pytest.approx(3 / 6)


def test_perplexity_is_exp_mean_nll_under_the_model(world_tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(world_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    model = LlamaForCausalLM(config).eval()
    windows = np.random.default_rng(0).integers(0, len(world_tokenizer), size=(3, 12))
    values = compute_metrics(windows, ["perplexity", "ppl_spread"], world_tokenizer, model)
    with torch.no_grad():
        x = torch.from_numpy(windows)
        logp = torch.log_softmax(model(x).logits.double(), -1)
        nll = -logp[:, :-1].gather(2, x[:, 1:, None])[..., 0]
    assert values["perplexity"] == pytest.approx(math.exp(nll.mean().item()), rel=1e-9)
    assert values["ppl_spread"] == pytest.approx(nll.mean(1).std(unbiased=False).item(), rel=1e-9)


def test_text_metrics_and_registry(world_tokenizer):
    windows = np.array([world_tokenizer("the cat sat. " * 40)["input_ids"][:100]])
    values = compute_metrics(windows, ["compression_ratio", "vocab_coverage"], world_tokenizer)
    assert values["compression_ratio"] > 1.5
    assert values["vocab_coverage"] == len(set(windows[0])) / len(world_tokenizer)
    assert {"perplexity", "ngram4_aggregation", "token_entropy"} <= set(METRICS)
    with pytest.raises(KeyError, match="unknown metrics"):
        compute_metrics(windows, ["nope"], world_tokenizer)
