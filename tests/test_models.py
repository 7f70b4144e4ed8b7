"""Pruned checkpoints: written, reloaded and verified; an off-target checkpoint is an error."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from calmix.pruning.checkpoints import _verify, prune_checkpoint
from calmix.pruning.driver import model_sparsity
from calmix.models.loading import load_model, write_checkpoint_manifest
from calmix.pruning.targets import display as target_label, parse as parse_target
from calmix.pruning.driver import PruningError
from calmix.world.domain import World


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory, world_tokenizer):
    """A tiny LLaMA whose in_features (36) make per-row Wanda counts round down at 60%."""
    path = tmp_path_factory.mktemp("dense")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(world_tokenizer), hidden_size=36, intermediate_size=72,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(path)
    world_tokenizer.save_pretrained(path)
    write_checkpoint_manifest(path)
    return path


@pytest.fixture(scope="module")
def shard(tmp_path_factory, make_shard):
    path = tmp_path_factory.mktemp("shard") / "web.parquet"
    make_shard(World(0).documents("web", 60, seed=1), path, nsamples=8, seqlen=32)
    return path


def test_targets():
    assert parse_target("0.6") == (0.6, 0, 0) and parse_target("2of4") == (0.5, 2, 4)
    assert target_label("2of4") == "2:4" and target_label("0.6") == "0.6"


@pytest.mark.parametrize("method, target", [("sparsegpt", "0.6"), ("wanda", "0.6"), ("wanda", "2of4"), ("magnitude", "0.6")])
def test_checkpoint_is_verified_and_reported(tmp_path, dense_dir, shard, method, target):
    out = tmp_path / "pruned"
    prune_checkpoint(dense_dir, None if method == "magnitude" else shard, out, method=method, target=target)
    report = json.loads((out / "prune_report.json").read_text())
    sparsity = parse_target(target)[0]
    assert abs(report["verified"]["sparsity"] - sparsity) <= 1 / 36
    assert report["target"] == target_label(target) and report["weights_sha256"]
    assert (report["shard_sha256"] is None) == (method == "magnitude")
    reloaded = load_model(out)
    assert reloaded.model.layers[0].self_attn.q_proj.weight.eq(0).float().mean() > 0.4
    assert not list(tmp_path.glob(".pruned.tmp-*"))


def test_off_target_checkpoint_is_refused(dense_dir):
    dense = load_model(dense_dir)
    names = list(model_sparsity(dense)["layers"])
    with pytest.raises(PruningError, match=r"off target: \d+ linear layers.*targets \[0.6"):
        _verify(dense, dict.fromkeys(names, 0.6), 0, 0)
    with pytest.raises(PruningError, match="off target 2:4"):
        _verify(dense, dict.fromkeys(names, 0.5), 2, 4)
    # A dense decoder never passes as pruned, whatever targets its report records.
    with pytest.raises(PruningError, match="no pruned weight"):
        _verify(dense, dict.fromkeys(names, 0.0), 0, 0)
    # Each layer against its own recorded target (a profile such as OWL gives each its own).
    with torch.no_grad():
        dense.get_submodule(names[0]).weight[:, :18] = 0  # half of its 36 inputs
    targets = {**dict.fromkeys(names, 0.0), names[0]: 0.5}
    assert _verify(dense, targets, 0, 0)["layers_checked"] == len(names)
    with pytest.raises(PruningError, match="1 linear layers"):
        _verify(dense, {**targets, names[-1]: 0.3}, 0, 0)


def test_skipped_layers_are_not_checked(tmp_path, dense_dir, shard):
    out = tmp_path / "pruned"
    prune_checkpoint(dense_dir, shard, out, method="sparsegpt", target="0.5", skip=["*.mlp.down_proj"])
    model = load_model(out)
    assert model.model.layers[0].mlp.down_proj.weight.ne(0).all()
