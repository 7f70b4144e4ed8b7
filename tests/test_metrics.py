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


# --------------------------------------------------------------------------------------------
# Per-token NLL (calmix.calibration.likelihood): the oracle, batch and chunk invariance, memory
# --------------------------------------------------------------------------------------------


def vocab_heavy_llama(vocab: int = 3000) -> LlamaForCausalLM:
    """A model whose logits dwarf everything else, as Llama-3's 128,256-token head does."""
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def numpy_nll(model, windows: np.ndarray) -> np.ndarray:
    """Oracle: logsumexp(logits) - logit[target] in numpy float64, one window at a time."""
    rows = []
    for window in windows:
        with torch.no_grad():
            logits = model(torch.from_numpy(window[None])).logits[0, :-1].numpy().astype(np.float64)
        top = logits.max(axis=1)
        lse = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        rows.append(lse - logits[np.arange(len(logits)), window[1:]])
    return np.array(rows)


def test_token_nll_matches_a_numpy_logsumexp_and_ignores_batch_and_chunk(monkeypatch):
    from calmix.calibration import likelihood

    model = vocab_heavy_llama()
    windows = np.random.default_rng(2).integers(0, 3000, size=(5, 24))
    nll = likelihood.token_nll(model, windows, batch_size=5)
    assert nll.shape == (5, 23) and nll.dtype == np.float64
    np.testing.assert_allclose(nll, numpy_nll(model, windows), rtol=1e-12, atol=0)
    for batch_size in (1, 2, 3):  # windows per forward pass: the same bytes
        assert np.array_equal(likelihood.token_nll(model, windows, batch_size=batch_size), nll)
    monkeypatch.setattr(likelihood, "CHUNK_LOGITS", 2 * 23 * 3000)  # two whole windows per chunk: the same bytes
    assert np.array_equal(likelihood.token_nll(model, windows, batch_size=5), nll)
    monkeypatch.setattr(likelihood, "CHUNK_LOGITS", 7 * 3000)  # a window split into blocks of 7 positions
    np.testing.assert_allclose(likelihood.token_nll(model, windows, batch_size=5), nll, rtol=1e-13, atol=0)


def test_whole_window_chunks_give_exactly_the_values_of_one_cross_entropy():
    """So the built-in study's metrics keep their bytes: its windows (127 x 1,024 logits) are never split."""
    from calmix.calibration.likelihood import chunked_nll

    logits = torch.randn(6, 40, 1024, generator=torch.Generator().manual_seed(3)) * 4
    targets = torch.randint(0, 1024, (6, 40), generator=torch.Generator().manual_seed(4))
    whole = torch.nn.functional.cross_entropy(logits.double().transpose(1, 2), targets, reduction="none")
    for chunk in (40 * 1024, 4 * 40 * 1024, 2**24):
        assert torch.equal(chunked_nll(logits, targets, chunk), whole)
    bf16 = logits.bfloat16()
    assert torch.equal(chunked_nll(bf16, targets, 40 * 1024),
                       torch.nn.functional.cross_entropy(bf16.double().transpose(1, 2), targets, reduction="none"))


def test_token_nll_never_upcasts_more_than_a_chunk_of_logits(monkeypatch):
    """The memory bound: no float64 tensor larger than CHUNK_LOGITS (at Llama-3.1-8B's shapes the old
    float64 copy of the logits was batch x 2,048 x 128,256 x 8 B: 33.6 GB at batch 16)."""
    from torch.utils._pytree import tree_leaves
    from torch.utils._python_dispatch import TorchDispatchMode

    from calmix.calibration import likelihood

    class LargestFloat64(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                    LargestFloat64.largest = max(LargestFloat64.largest, t.numel())
            return out

    model = vocab_heavy_llama()
    windows = np.random.default_rng(5).integers(0, 3000, size=(4, 33))
    expected = numpy_nll(model, windows)
    chunk = 8 * 3000  # 8 positions of the vocabulary; a batch holds 4 x 32 x 3,000 logits
    monkeypatch.setattr(likelihood, "CHUNK_LOGITS", chunk, raising=False)
    with LargestFloat64():
        nll = likelihood.token_nll(model, windows, batch_size=4)
    assert LargestFloat64.largest <= chunk, f"a float64 tensor of {LargestFloat64.largest} elements (bound {chunk})"
    np.testing.assert_allclose(nll, expected, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------------------------
# The scoring batches are params of their jobs: a change reruns the metrics, or the pool
# --------------------------------------------------------------------------------------------

STUDY = {
    "models": {"world": {"kind": "world"}},
    "calibration": {"seeds": [0], "sources": {"web": {"kind": "world", "generator": "web"}},
                    "builders": {"selfcal": {"kind": "selfcal"}}},
    "evaluation": {"dimensions": {"general": {"tasks": ["world_general"]}}},
}
SCORED = ["results/metrics/world/web/seed0.json", "results/pools/world/selfcal/seed0.parquet"]


def _planned(workdir, config: dict, *args: str) -> str:
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parent.parent
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(repo / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(path), "--cores", "1", *args, "--", *SCORED]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.workflow
def test_scoring_batch_sizes_rerun_the_jobs_they_reach(tmp_path):
    import copy
    import re

    # A finished study, as `snakemake --touch` records one (every job's params in the metadata).
    for path in ["results/world/pretrain.jsonl", "results/world/pretrain.json", "results/models/world/config.json",
                 "results/corpora/web.jsonl", "results/corpora/web.json", "results/tokens/world/web.parquet",
                 "results/tokens/world/web.json", "results/shards/world/web/seed0.parquet",
                 "results/shards/world/web/seed0.json", *SCORED, "results/pools/world/selfcal/seed0.json"]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    _planned(tmp_path, STUDY, "--touch", "--forceall")

    def reruns(config: dict) -> set[str]:
        out = _planned(tmp_path, config, "-n", "--rerun-triggers", "params")
        return set(re.findall(r"^rule (\w+):", out, flags=re.M))

    defaults = copy.deepcopy(STUDY)
    defaults["calibration"]["metrics_batch_size"] = 16
    defaults["calibration"]["builders"]["selfcal"].update(batch_size=8, score_batch_size=8)
    assert reruns(defaults) == set()
    metrics = copy.deepcopy(STUDY)
    metrics["calibration"]["metrics_batch_size"] = 4
    assert reruns(metrics) == {"metrics"}
    pool = copy.deepcopy(STUDY)
    pool["calibration"]["builders"]["selfcal"]["score_batch_size"] = 2
    assert reruns(pool) == {"generate_pool"}
