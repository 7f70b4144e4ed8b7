"""Integrity: atomic writes leave nothing half-written; a checkpoint, shard, token file or pool that
differs from or lacks its manifest is refused, naming the file and its rebuild; calmix-verify finds
every such file in a results/ tree without changing anything."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import edit_in_place
from transformers import LlamaConfig, LlamaForCausalLM

from calmix.calibration.corpora import write_corpus
from calmix.core.integrity import IntegrityError
from calmix.core.io import atomic_path, read_json, write_json
from calmix.core.integrity import CheckpointError, verify_checkpoint
from calmix.models.loading import load_model, write_checkpoint_manifest
from calmix.calibration.mix import build_mix
from calmix.calibration.pools import read_pool, write_pool
from calmix.calibration.shards import ShardError, ShardIntegrityError, load_windows, read_manifest, read_tokens, write_shard, write_tokens
from calmix.core.verify import main as verify_main
from calmix.core.verify import verify_tree

REPO = Path(__file__).resolve().parent.parent


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


# --------------------------------------------------------------------------------------------
# The consumer states the manifest it expects: deleting it cannot switch the check off
# --------------------------------------------------------------------------------------------


def rebuild(path) -> str:
    return f"run snakemake again with `--forcerun {path}`"


def test_a_required_manifest_that_is_missing_refuses_the_folder(checkpoint):
    verify_checkpoint(checkpoint, "training.json")
    assert load_model(checkpoint, manifest="training.json") is not None
    (checkpoint / "training.json").unlink()
    for check in (lambda: verify_checkpoint(checkpoint, "training.json"), lambda: load_model(checkpoint, manifest="training.json")):
        with pytest.raises(CheckpointError) as err:
            check()
        assert f"{checkpoint} has no training.json" in str(err.value) and rebuild(checkpoint) in str(err.value)
    verify_checkpoint(checkpoint)  # the same folder as a user's own model: not calmix's to check


def test_a_pruned_checkpoint_needs_its_prune_report_not_any_manifest(checkpoint):
    with pytest.raises(CheckpointError, match=f"{checkpoint} has no prune_report.json"):
        load_model(checkpoint, manifest="prune_report.json")  # training.json does not stand in for it


def test_a_required_checkpoint_that_is_missing_or_has_a_damaged_manifest_is_refused(checkpoint, tmp_path):
    gone = tmp_path / "gone"
    with pytest.raises(CheckpointError, match=f"{gone} is missing .*--forcerun {gone}"):
        verify_checkpoint(gone, "prune_report.json")
    (checkpoint / "training.json").write_text('{"weights_sha256": ')
    with pytest.raises(CheckpointError, match="training.json is not valid JSON .*--forcerun"):
        verify_checkpoint(checkpoint, "training.json")
    with pytest.raises(ValueError, match="manifest must be one of"):
        verify_checkpoint(checkpoint, "config.json")


# --------------------------------------------------------------------------------------------
# Shards, token files and pools: missing files and manifests are integrity errors, not tracebacks
# --------------------------------------------------------------------------------------------


def test_integrity_errors_are_one_family():
    assert issubclass(CheckpointError, IntegrityError) and issubclass(ShardIntegrityError, IntegrityError)
    assert issubclass(ShardIntegrityError, ShardError)  # callers that caught ShardError still do
    assert not issubclass(IntegrityError, OSError)


@pytest.fixture
def data_files(tmp_path, make_shard):
    """A shard, a token file and a pool, each with its manifest."""
    shard = tmp_path / "shards" / "seed0.parquet"
    make_shard(["the cat sat on the mat. " * 40] * 4, shard, nsamples=4, seqlen=16)
    tokens = tmp_path / "tokens" / "web.parquet"
    write_tokens(tokens, [[1, 2, 3], [4, 5]], ["a", "b"], {"source": "web"})
    pool = tmp_path / "pools" / "seed0.parquet"
    write_pool(np.arange(32).reshape(4, 8), {"perplexity": np.arange(4.0)}, pool, {"kind": "selfcal"})
    return {"shard": shard, "tokens": tokens, "pool": pool}


READERS = {"shard": load_windows, "tokens": read_tokens, "pool": read_pool}


@pytest.mark.parametrize("kind", list(READERS))
@pytest.mark.parametrize("damage, words", [
    (lambda p: p.unlink(), "{path} is missing; rebuild it"),
    (lambda p: p.with_suffix(".json").unlink(), "{path}: its manifest {manifest} is missing"),
    (lambda p: p.with_suffix(".json").write_text("{"), "{path}: its manifest {manifest} is not valid JSON"),
    (lambda p: write_json(p.with_suffix(".json"), {"source": "x"}), "{path}: its manifest {manifest} records no sha256"),
    (lambda p: p.write_bytes(p.read_bytes()[:-1] + bytes([p.read_bytes()[-1] ^ 1])), "{path}: sha256 does not match its manifest"),
])
def test_every_reader_refuses_a_missing_or_damaged_file_naming_it_and_its_rebuild(data_files, kind, damage, words):
    path = data_files[kind]
    damage(path)
    with pytest.raises(ShardIntegrityError) as err:
        READERS[kind](path)
    message = str(err.value)
    assert words.format(path=path, manifest=path.with_suffix(".json")) in message
    assert rebuild(path) in message and "\n" not in message


def test_read_manifest_names_the_data_file_that_is_missing(data_files):
    data_files["tokens"].unlink()
    with pytest.raises(ShardIntegrityError, match=f"{data_files['tokens']} is missing"):
        read_manifest(data_files["tokens"])


def test_a_mix_whose_source_shard_was_deleted_names_it(tmp_path):
    shards = {}
    for name in ("web", "code"):
        shards[name] = tmp_path / name / "seed0.parquet"
        write_shard(np.ones((4, 8), dtype=np.int64), shards[name], {"windows": [[[0, 0, 8]]] * 4, "record_ids": [["x"]] * 4})
    shards["code"].with_suffix(".json").unlink()
    with pytest.raises(ShardIntegrityError, match=f"{shards['code']}: its manifest .* is missing.*--forcerun {shards['code']}"):
        build_mix(shards, weights={"web": 1.0, "code": 1.0}, nsamples=4, seqlen=8, seed=0, name="mix", spec={},
                  path=tmp_path / "mix" / "seed0.parquet")
    assert not (tmp_path / "mix" / "seed0.parquet").exists()


def test_pruning_with_a_deleted_shard_or_model_manifest_names_them(tmp_path, checkpoint, data_files):
    from calmix.pruning.checkpoints import prune_checkpoint

    out = tmp_path / "pruned"
    data_files["shard"].unlink()
    with pytest.raises(ShardIntegrityError, match=f"{data_files['shard']} is missing; rebuild it"):
        prune_checkpoint(checkpoint, data_files["shard"], out, method="wanda", target="0.5", model_manifest="training.json")
    (checkpoint / "training.json").unlink()
    with pytest.raises(CheckpointError, match=f"{checkpoint} has no training.json"):
        prune_checkpoint(checkpoint, None, out, method="magnitude", target="0.5", model_manifest="training.json")
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# calmix-verify
# --------------------------------------------------------------------------------------------


@pytest.fixture
def results(tmp_path, make_shard):
    """A small results/ tree with one file of every checked kind, all intact."""
    root = tmp_path / "study" / "results"
    write_corpus([{"id": "0", "text": "a"}], root / "corpora" / "web.jsonl", "web", {"kind": "world"}, {})
    write_corpus([{"id": "0", "text": "a"}], root / "world" / "pretrain.jsonl", "pretrain", {"kind": "world"}, {})
    (root / "world" / "eval").mkdir()
    (root / "world" / "eval" / "world_general.jsonl").write_text("{}\n")  # held-out items: no manifest, by design
    write_tokens(root / "tokens" / "world" / "web.parquet", [[1, 2, 3]], ["0"], {"source": "web"})
    make_shard(["the cat sat on the mat. " * 40] * 4, root / "shards" / "world" / "web" / "seed0.parquet", nsamples=4, seqlen=16)
    write_pool(np.arange(16).reshape(2, 8), {"perplexity": np.ones(2)}, root / "pools" / "world" / "igsp" / "seed0.parquet", {})
    for folder, manifest in ((root / "models" / "world", "training.json"),
                             (root / "pruned" / "world" / "wanda" / "0.5" / "web" / "seed0", "prune_report.json")):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(bytes(range(256)) * 4)
        (folder / "config.json").write_text("{}")
        write_checkpoint_manifest(folder, manifest)
    write_json(root / "models" / "llama.json", {"repo": "x", "path": "/nowhere"})  # a hub model's fetch manifest
    (root / "eval" / "world" / "dense").mkdir(parents=True)
    (root / "eval" / "world" / "dense" / "general.json").write_text("{}")
    (root / "pruned" / "world" / "wanda" / "0.5" / "web" / ".seed1.tmp-999").mkdir()  # a killed writer's leftovers
    return root


def snapshot(root: Path) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def lines(root: Path, capsys, *args: str) -> tuple[int, list[str]]:
    code = verify_main([str(root), *args])
    return code, capsys.readouterr().out.splitlines()


def test_an_intact_tree_verifies_every_file_once(results, capsys):
    before = snapshot(results)
    assert lines(results, capsys) == (0, ["7 files verified, 0 problems"])  # 5 data files, 2 weights files
    assert snapshot(results) == before


HINT = "[--configfile <your study's config>]"
SHARD = "results/shards/world/web/seed0.parquet"
PRUNED = "results/pruned/world/wanda/0.5/web/seed0"
REPORT = "results/prune_reports/world/wanda/0.5/web/seed0.json"  # the job that prunes it writes it, kept or temporary


@pytest.mark.parametrize("damage, line", [
    (lambda r: edit_in_place(r / "shards/world/web/seed0.parquet"),
     f"{SHARD}: sha256 differs from what seed0.json records (truncated or edited); rebuild it: snakemake --forcerun {SHARD} {HINT}"),
    (lambda r: edit_in_place(r / "pruned/world/wanda/0.5/web/seed0/model.safetensors"),
     f"{PRUNED}/model.safetensors: sha256 differs from what prune_report.json records (truncated or edited); "
     f"rebuild it: snakemake --forcerun {REPORT} {HINT}"),
    (lambda r: (r / "pruned/world/wanda/0.5/web/seed0/prune_report.json").unlink(),
     f"{PRUNED}: no prune_report.json, so its weights cannot be checked (deleted?); rebuild it: snakemake --forcerun {REPORT} {HINT}"),
    (lambda r: (r / "models/world/training.json").unlink(),
     f"results/models/world: no training.json or conversion.json, so its weights cannot be checked (deleted?); "
     f"rebuild it: snakemake --forcerun results/models/world {HINT}"),
    (lambda r: (r / "models/world/model.safetensors").unlink(),
     "results/models/world/model.safetensors: missing (recorded in training.json); rebuild it: snakemake --forcerun results/models/world"),
    (lambda r: (r / "models/world/extra.safetensors").write_bytes(b"x"),
     "results/models/world/extra.safetensors: not recorded in training.json; rebuild it: snakemake --forcerun results/models/world"),
    (lambda r: (r / "tokens/world/web.json").unlink(),
     "results/tokens/world/web.parquet: no manifest (web.json missing), so it cannot be checked; "
     "rebuild it: snakemake --forcerun results/tokens/world/web.parquet"),
    (lambda r: (r / "pools/world/igsp/seed0.parquet").unlink(),
     "results/pools/world/igsp/seed0.parquet: missing (its manifest seed0.json is there); "
     "rebuild it: snakemake --forcerun results/pools/world/igsp/seed0.parquet"),
    (lambda r: write_json(r / "corpora/web.json", {"source": "web"}),
     "results/corpora/web.json: sha256 not recorded; rebuild it: snakemake --forcerun results/corpora/web.jsonl"),
    (lambda r: (r / "world/pretrain.json").write_text("{"),
     "results/world/pretrain.json: is not valid JSON (truncated or edited); rebuild it: snakemake --forcerun results/world/pretrain.jsonl"),
])
def test_each_damage_is_one_line_naming_the_file_what_is_wrong_and_the_rebuild(results, capsys, damage, line):
    damage(results)
    before = snapshot(results)
    code, out = lines(results, capsys)
    assert code == 1 and len(out) == 2, out
    assert out[0].startswith(line) and out[0].endswith(HINT)
    assert out[1].endswith("verified, 1 problem")
    assert snapshot(results) == before  # it never modifies anything


def test_every_problem_is_reported_and_paths_are_named_from_the_study(results, capsys, monkeypatch):
    edit_in_place(results / "shards/world/web/seed0.parquet")
    edit_in_place(results / "corpora/web.jsonl")
    monkeypatch.chdir(results.parent.parent)  # the folder may be named any way; lines name it from the study
    code, out = lines(Path("study") / "results", capsys, "--jobs", "2")
    assert code == 1 and [line.split(":")[0] for line in out[:2]] == ["results/corpora/web.jsonl", SHARD]
    assert out[2] == "7 files verified, 2 problems"
    checked, problems = verify_tree(results)
    assert checked == 7 and len(problems) == 2


def test_the_command_exits_1_on_a_problem_0_when_intact_and_is_a_console_script(results):
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["calmix-verify"] == "calmix.core.verify:main"
    command = [sys.executable, "-m", "calmix.core.verify"]
    intact = subprocess.run(command, cwd=results.parent, capture_output=True, text=True)
    assert (intact.returncode, intact.stdout) == (0, "7 files verified, 0 problems\n")
    edit_in_place(results / "pools/world/igsp/seed0.parquet")
    damaged = subprocess.run(command, cwd=results.parent, capture_output=True, text=True)
    assert damaged.returncode == 1 and damaged.stdout.startswith("results/pools/world/igsp/seed0.parquet: sha256 differs")
    missing = subprocess.run([*command, "nowhere"], cwd=results.parent, capture_output=True, text=True)
    assert missing.returncode == 2 and "nowhere is not a folder" in missing.stderr


@pytest.mark.parametrize("path, target", [
    ("results/pruned/world/wanda/0.5/web/seed0", "results/prune_reports/world/wanda/0.5/web/seed0.json"),
    ("results/pruned/m/sparsegpt/2of4/none/seed3/model.safetensors", "results/prune_reports/m/sparsegpt/2of4/none/seed3.json"),
    ("/abs/study/results/pruned/m/magnitude/0.6/none/seed0", "/abs/study/results/prune_reports/m/magnitude/0.6/none/seed0.json"),
    ("results/shards/world/web/seed0.parquet", "results/shards/world/web/seed0.parquet"),
    ("results/models/world", "results/models/world"),
])
def test_the_rebuild_of_a_pruned_checkpoint_forces_its_prune_report(path, target):
    """A temporary checkpoint is no rule's output (`--forcerun` on it fails with MissingRuleException); its
    prune report is an output of the job that prunes it in both modes."""
    from calmix.core.integrity import rebuild_target

    assert str(rebuild_target(path)) == target
