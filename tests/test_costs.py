"""calmix-plan's cost model against independent counts: transformers' own parameter count of the
same LLaMA shape, and the jobs Snakemake plans for a study."""

import re

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from calmix.costs import Architecture, architecture, jobs_by_rule
from conftest import REPO, TINY


@pytest.mark.parametrize("tied", [True, False])
def test_parameter_count_matches_transformers(tied):
    arch = Architecture(hidden=64, intermediate=160, layers=3, heads=8, kv_heads=2, vocab=500, tied=tied)
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                                             num_attention_heads=8, num_key_value_heads=2, vocab_size=500,
                                             tie_word_embeddings=tied))
    norms = sum(p.numel() for n, p in model.named_parameters() if "norm" in n)
    assert arch.params == sum(p.numel() for p in model.parameters()) - norms


def test_sparsegpt_costs_more_than_wanda_and_magnitude_nothing():
    arch = Architecture(4096, 14336, 32, 32, 8, 128256, False)
    assert arch.prune_flops("magnitude", 128 * 2048, 2048) == 0
    assert arch.prune_flops("sparsegpt", 128 * 2048, 2048) > arch.prune_flops("wanda-owl", 128 * 2048, 2048) > 0


def test_world_shape_comes_from_the_config():
    config = {"models": {"w": {"kind": "world"}}, "world": {"vocab_size": 300, "model": {
        "hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2}}}
    assert architecture(config, "w") == Architecture(32, 64, 2, 2, 2, 300, True)


@pytest.mark.workflow
def test_jobs_by_rule_is_snakemakes_dry_run():
    jobs = jobs_by_rule([str(TINY)])
    assert jobs["prune"] == 6 and jobs["prune_seed"] == 1 and jobs["evaluate_dense"] == 1  # a set and setting each
    assert jobs["evaluate_pruned"] == 3 and jobs["evaluate_pruned_seed"] == 1  # a set each, every setting


def test_the_paper_study_needs_two_checkpoints_of_disk_at_once_not_nineteen(tmp_path):
    """Temporary checkpoints (the default for a hub model) bound the paper study's disk by the jobs
    running at once; kept ones (pruning.keep_checkpoints: true) need all 19 (8.03B bf16: 14.96 GiB each)."""
    from calmix.costs import plan

    paper = str(REPO / "experiments" / "paper-llama3.1-8b.yaml")
    keep = tmp_path / "keep.yaml"
    keep.write_text("pruning: {keep_checkpoints: true}\n")
    temporary, kept = plan([paper], jobs=2), plan([paper, str(keep)], jobs=2)
    assert "disk: checkpoints temporary: peak 29.9 GiB, final 0.0 GiB" in temporary
    assert "disk: checkpoints kept: peak 284.2 GiB, final 284.2 GiB" in kept
    assert re.search(r"^prune_and_evaluate +19 +19$", temporary, re.M)


@pytest.mark.workflow
def test_a_dry_run_that_fails_says_why_and_where(tmp_path, monkeypatch):
    """Outside the repository Snakemake finds no Snakefile and says so on stdout: the message carries it."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        jobs_by_rule([str(TINY)])
    message = str(exit_.value)
    assert "No Snakefile found" in message and str(tmp_path) in message and "repository root" in message
