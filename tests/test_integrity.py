"""Integrity: atomic writes leave nothing half-written, and a checkpoint that differs from its manifest is refused."""

import os

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from calmix.io import atomic_path, read_json
from calmix.models import CheckpointError, load_model, verify_checkpoint, write_checkpoint_manifest


@pytest.fixture
def checkpoint(tmp_path, world_tokenizer):
    path = tmp_path / "model"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(world_tokenizer), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(path)
    world_tokenizer.save_pretrained(path)
    write_checkpoint_manifest(path, "training.json", steps=0)
    return path


def test_intact_checkpoint_loads(checkpoint):
    manifest = read_json(checkpoint / "training.json")
    assert manifest["steps"] == 0 and list(manifest["weights_sha256"]) == ["model.safetensors"]
    verify_checkpoint(checkpoint)
    assert load_model(checkpoint) is not None


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "has a sha256 other than training.json records (truncated or edited)"),
    (lambda p: p.write_bytes(p.read_bytes()[:-1] + bytes([p.read_bytes()[-1] ^ 1])), "has a sha256 other than"),
    (lambda p: p.unlink(), "is missing"),
    (lambda p: p.with_name("extra.safetensors").write_bytes(b"x"), "extra.safetensors is not in training.json"),
])
def test_damaged_checkpoint_is_refused_naming_the_file_and_the_rebuild(checkpoint, damage, words):
    damage(checkpoint / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_model(checkpoint)
    assert str(checkpoint) in str(err.value) and words in str(err.value)
    assert f"run snakemake again with `--forcerun {checkpoint}`" in str(err.value)


def test_manifest_without_weights_record_is_refused(checkpoint):
    (checkpoint / "training.json").write_text('{"steps": 0}')
    with pytest.raises(CheckpointError, match="records no weights_sha256"):
        verify_checkpoint(checkpoint)


def test_folders_calmix_did_not_write_are_not_checked(checkpoint, tmp_path):
    (checkpoint / "training.json").unlink()
    verify_checkpoint(checkpoint)  # a user's own local model folder
    verify_checkpoint(tmp_path / "results" / "models" / "llama.json")  # a hub model's fetch manifest


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_removes_what_a_killed_writer_left(tmp_path):
    """SIGKILL skips every cleanup: the next writer of the same path removes the leftovers."""
    target = tmp_path / "pruned"
    stale_dir = tmp_path / ".pruned.tmp-999999"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"half")
    other = tmp_path / ".pruned2.tmp-999999"
    other.mkdir()
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "done").write_text("ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pruned2.tmp-999999", "pruned"]
    assert (target / "done").read_text() == "ok" and not str(os.getpid()) in str(list(tmp_path.iterdir()))
