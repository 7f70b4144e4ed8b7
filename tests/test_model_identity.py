"""What a result depends on beyond calmix's own code is in its key: the dense model's identity (a hub
model's repository, commit and weights' sha256) and the versions of torch, transformers and lm-eval.

A hub model is served offline from a Hugging Face cache laid out in a temporary folder (blobs named as
huggingface_hub names them, snapshots of two revisions whose weights differ, refs/main) and fetched by
the workflow's own fetch script. Changing the configured revision re-prunes the checkpoint and rescores
the pruned and the dense records; so does an upgrade of torch (the version source, importlib.metadata,
replaced). These run the jobs' own decisions (calmix.evaluation.pruned, calmix.evaluation.checkpoint)
on a tiny LLaMA scored on the world's general task. A last test dry-runs the workflow: after either
edit it plans the jobs that prune and score.
"""

import hashlib
import importlib.metadata
import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from calmix.world.domain import World

REPO = Path(__file__).resolve().parent.parent
TASK_DIR = REPO / "resources" / "lm_eval_tasks"
HUB_REPO = "org/tiny-llama"
#: Two revisions of the repository: the same config and tokenizer, weights from another seed.
REVISIONS = {"base": (hashlib.sha1(b"base").hexdigest(), 0), "instruct": (hashlib.sha1(b"instruct").hexdigest(), 1)}
TASK = "world_general"


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, world_tokenizer) -> dict:
    """A Hugging Face hub cache holding both revisions (refs/main: instruct), as huggingface_hub lays it
    out: LFS files (weights) in blobs named by their sha256, other files by their git sha1, snapshot
    files linking to them. Returns the cache and each revision's weights' sha256, hashed from the bytes."""
    cache = tmp_path_factory.mktemp("hf_hub_cache")
    repo = cache / f"models--{HUB_REPO.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    weights = {}
    for name, (commit, seed) in REVISIONS.items():
        saved = tmp_path_factory.mktemp(name)
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=len(world_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                             bos_token_id=world_tokenizer.bos_token_id, eos_token_id=world_tokenizer.eos_token_id)
        LlamaForCausalLM(config).save_pretrained(saved)
        world_tokenizer.save_pretrained(saved)
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for file in sorted(saved.iterdir()):
            data = file.read_bytes()
            blob = hashlib.sha256(data).hexdigest() if file.suffix == ".safetensors" else _git_blob_sha1(data)
            (repo / "blobs" / blob).write_bytes(data)
            (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob))
        weights[name] = {"model.safetensors": hashlib.sha256((saved / "model.safetensors").read_bytes()).hexdigest()}
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISIONS["instruct"][0])
    return {"cache": cache, "weights": weights}


@pytest.fixture
def offline_hub(hub_cache, monkeypatch):
    """The hub switched off (as a user's HF_HUB_OFFLINE does), its cache the one above."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("CALMIX_OFFLINE_BY_WORKFLOW", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache["cache"]))
    return hub_cache


def fetch(manifest: Path, revision: str, monkeypatch) -> dict:
    """Run the fetch_model rule's script for config `models.tiny: {kind: hub, path: org/tiny-llama, revision}`."""
    snakemake = SimpleNamespace(params=SimpleNamespace(spec={"kind": "hub", "path": HUB_REPO, "revision": revision}),
                                output=[str(manifest)], log=["unused.log"])
    monkeypatch.setattr("calmix.core.logs.setup_logging", lambda *args, **kwargs: None)
    runpy.run_path(str(REPO / "scripts" / "fetch_model.py"), init_globals={"snakemake": snakemake}, run_name="__main__")
    return json.loads(manifest.read_text())


@pytest.fixture
def study(tmp_path) -> dict:
    """A working directory with the world's general items, and one dimension scoring them."""
    items = tmp_path / "results" / "world" / "eval" / f"{TASK}.jsonl"
    items.parent.mkdir(parents=True)
    items.write_text("".join(json.dumps(item) + "\n" for item in World(0).eval_items(TASK, 6, seed=0)))
    return {"root": tmp_path, "manifest": tmp_path / "results" / "models" / "tiny.json",
            "dimensions": {"general": {"tasks": [TASK], "harness": {"batch_size": 8, "limit": 4}}},
            "data": {"general": [items]}}


def _record(path: Path) -> dict:
    return json.loads(path.read_text())


def test_the_fetch_manifest_records_the_commit_and_the_weights_sha256(offline_hub, tmp_path, monkeypatch):
    from calmix.models.folders import model_identity

    manifest = tmp_path / "tiny.json"
    base = fetch(manifest, REVISIONS["base"][0], monkeypatch)
    assert base["resolved_revision"] == REVISIONS["base"][0]
    assert base["weights_sha256"] == offline_hub["weights"]["base"]
    identity = model_identity(manifest)
    assert identity["repo"] == HUB_REPO and identity["revision"] == REVISIONS["base"][0]
    assert identity["weights"] == offline_hub["weights"]["base"]
    assert identity["files"]["tokenizer.json"] == hashlib.sha256(
        (Path(base["path"]) / "tokenizer.json").read_bytes()).hexdigest()

    main = fetch(manifest, "main", monkeypatch)  # a branch: resolved to its commit
    assert main["resolved_revision"] == REVISIONS["instruct"][0]
    assert main["weights_sha256"] == offline_hub["weights"]["instruct"] != base["weights_sha256"]


def test_a_damaged_blob_is_refused_when_fetched(offline_hub, tmp_path, monkeypatch):
    from calmix.fetch.hub import HubCacheError, snapshot_weights

    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    blob = tmp_path / ("0" * 64)  # named as an LFS blob, but not by its bytes' sha256
    blob.write_bytes(b"weights")
    (snapshot / "model.safetensors").symlink_to(blob)
    with pytest.raises(HubCacheError, match="damaged download"):
        snapshot_weights(snapshot)


def test_a_changed_hub_revision_reprunes_and_rescores(offline_hub, study, monkeypatch):
    """models.tiny.revision edited (base to instruct: same tokenizer, other weights): the fetch rule
    rewrites the manifest, and the jobs that read it find every pruned and dense record stale."""
    from calmix.evaluation import pruned
    from calmix.evaluation.checkpoint import evaluate_checkpoint

    prunes = []
    real_prune = pruned.prune_checkpoint
    monkeypatch.setattr(pruned, "prune_checkpoint", lambda *a, **k: prunes.append(a) or real_prune(*a, **k))
    root, manifest = study["root"], study["manifest"]
    monkeypatch.chdir(root)
    dense_out = {"general": (root / "dense" / "general.json", root / "dense" / "general.items.parquet")}
    pruned_out = {"general": (root / "pruned" / "general.json", root / "pruned" / "general.items.parquet")}
    report = root / "report.json"
    common = dict(dimensions=study["dimensions"], data=study["data"], context={"code": {"x": "1"}},
                  task_dir=TASK_DIR, data_root=root)

    def dense():
        return evaluate_checkpoint(manifest, outputs=dense_out, identity={"model": "tiny"}, **common)

    def prune():
        return pruned.prune_and_evaluate(
            manifest, None, root / "checkpoint", report, method="magnitude", target="0.5",
            pruning_code={"calmix.pruning.magnitude": "1"}, options={}, model_manifest=None, dtype="float32",
            device="cpu", outputs=pruned_out, identity={"model": "tiny", "method": "magnitude"}, **common)

    fetch(manifest, REVISIONS["base"][0], monkeypatch)
    assert dense() == {"general": "scored"} and prune() == {"general": "scored"} and len(prunes) == 1
    first = {"dense": _record(dense_out["general"][0]), "pruned": _record(pruned_out["general"][0]),
             "report": _record(report)}
    assert first["dense"]["weights_sha256"] == offline_hub["weights"]["base"]
    assert dense() == {"general": "kept"} and prune() == {"general": "kept"} and len(prunes) == 1

    fetch(manifest, REVISIONS["instruct"][0], monkeypatch)
    assert dense() == {"general": "scored"}
    assert prune() == {"general": "scored"} and len(prunes) == 2  # pruned again from the new weights
    assert _record(report)["prune_key"] != first["report"]["prune_key"]
    assert _record(report)["weights_sha256"] != first["report"]["weights_sha256"]
    for name, out in (("dense", dense_out), ("pruned", pruned_out)):
        assert _record(out["general"][0])["evaluation_key"] != first[name]["evaluation_key"], name
    assert _record(dense_out["general"][0])["weights_sha256"] == offline_hub["weights"]["instruct"]


def _upgraded(package: str):
    """importlib.metadata.version with one package a (local) version further: the same code, another label."""
    real = importlib.metadata.version

    def version(name):
        found = real(name)
        if name.replace("-", "_") != package:
            return found
        return f"{found}.upgraded" if "+" in found else f"{found}+upgraded"

    return version


def test_a_torch_upgrade_reprunes_and_rescores(offline_hub, study, monkeypatch):
    from calmix.evaluation import pruned

    prunes = []
    real_prune = pruned.prune_checkpoint
    monkeypatch.setattr(pruned, "prune_checkpoint", lambda *a, **k: prunes.append(a) or real_prune(*a, **k))
    root, manifest = study["root"], study["manifest"]
    monkeypatch.chdir(root)
    outputs = {"general": (root / "general.json", root / "general.items.parquet")}
    report = root / "report.json"

    def prune():
        return pruned.prune_and_evaluate(
            manifest, None, root / "checkpoint", report, method="magnitude", target="0.5",
            pruning_code={"calmix.pruning.magnitude": "1"}, options={}, model_manifest=None, dtype="float32",
            device="cpu", dimensions=study["dimensions"], outputs=outputs, data=study["data"],
            identity={"model": "tiny"}, context={"code": {"x": "1"}}, task_dir=TASK_DIR, data_root=root)

    fetch(manifest, REVISIONS["base"][0], monkeypatch)
    assert prune() == {"general": "scored"} and prune() == {"general": "kept"} and len(prunes) == 1
    first = {"report": _record(report), "record": _record(outputs["general"][0])}
    monkeypatch.setattr(importlib.metadata, "version", _upgraded("torch"))
    assert prune() == {"general": "scored"} and len(prunes) == 2
    assert _record(report)["prune_key"] != first["report"]["prune_key"]
    assert _record(outputs["general"][0])["evaluation_key"] != first["record"]["evaluation_key"]


@pytest.mark.parametrize("package", ["torch", "transformers", "lm_eval"])
def test_every_version_is_in_the_keys_it_belongs_to(offline_hub, study, monkeypatch, package):
    """torch and transformers make the pruned weights and the scores; lm-eval only the scores, so
    upgrading it rescores the records of a checkpoint pruned as before."""
    from calmix.evaluation.checkpoint import evaluation_context, evaluation_key
    from calmix.models.folders import model_identity
    from calmix.pruning.checkpoints import prune_key

    monkeypatch.chdir(study["root"])
    fetch(study["manifest"], REVISIONS["base"][0], monkeypatch)
    dense = model_identity(study["manifest"])

    def keys():
        context = evaluation_context({"code": {}}, dense, dtype="float32", device="cpu")
        return (prune_key(dense, None, method="magnitude", target="0.5", dtype="float32", device="cpu", code={}),
                evaluation_key(dense["weights"], study["dimensions"]["general"], study["data"]["general"], context))

    before = keys()
    monkeypatch.setattr(importlib.metadata, "version", _upgraded(package))
    after = keys()
    assert (after[0] != before[0]) == (package != "lm_eval")
    assert after[1] != before[1]


def test_a_version_is_none_where_not_installed():
    from calmix.core.versions import package_versions

    assert package_versions(["torch", "no-such-distribution"]) == {
        "torch": importlib.metadata.version("torch"), "no-such-distribution": None}


def test_every_kind_of_model_folder_has_an_identity(tmp_path, world_tokenizer):
    """The world model's and a GGUF conversion's weights as their manifest records them, a user's own
    folder's hashed (also a pytorch_model.bin); their config and tokenizer files hashed in each."""
    from calmix.models.folders import model_identity
    from calmix.models.loading import write_checkpoint_manifest

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(world_tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    folder = tmp_path / "world"
    LlamaForCausalLM(config).save_pretrained(folder)
    world_tokenizer.save_pretrained(folder)
    local = model_identity(folder)
    sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert local["weights"] == {"model.safetensors": sha} and "repo" not in local
    assert {"config.json", "tokenizer.json"} <= set(local["files"])

    write_checkpoint_manifest(folder, "training.json", steps=1)
    assert model_identity(folder, "training.json") == local  # the manifest is not a file loading reads
    manifest = json.loads((folder / "training.json").read_text())
    (folder / "training.json").write_text(json.dumps({**manifest, "weights_sha256": {"model.safetensors": "0" * 64}}))
    assert model_identity(folder, "training.json")["weights"] == {"model.safetensors": "0" * 64}  # as recorded

    (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text().replace("</s>", "</eos>"))
    assert model_identity(folder)["files"]["tokenizer.json"] != local["files"]["tokenizer.json"]
    (folder / "pytorch_model.bin").write_bytes(b"weights")
    assert model_identity(folder)["files"]["pytorch_model.bin"] == hashlib.sha256(b"weights").hexdigest()


def test_a_fetch_manifest_that_no_longer_matches_its_snapshot_is_refused(offline_hub, tmp_path, monkeypatch):
    from calmix.core.integrity import IntegrityError
    from calmix.models.folders import model_identity

    manifest = tmp_path / "tiny.json"
    fetched = fetch(manifest, REVISIONS["base"][0], monkeypatch)
    manifest.write_text(json.dumps({**fetched, "weights_sha256": offline_hub["weights"]["instruct"]}))
    with pytest.raises(IntegrityError, match="links to a blob other than"):
        model_identity(manifest)
    manifest.write_text(json.dumps({k: v for k, v in fetched.items() if k != "weights_sha256"}))
    with pytest.raises(IntegrityError, match="older calmix.*--forcerun"):
        model_identity(manifest)


# ----------------------------------------------------------------- what the workflow plans
HUB_STUDY = {
    "models": {"tiny": {"kind": "hub", "path": HUB_REPO, "revision": REVISIONS["base"][0]}},
    "calibration": {"sources": {"web": {"kind": "world", "generator": "web", "docs": 10}}},
    "pruning": {"methods": ["magnitude"], "sparsities": [0.5]},  # data-free: the DAG needs no shards
    "evaluation": {"batch_size": 8, "dimensions": {"general": {"tasks": [TASK]}}},
}
TARGETS = ["results/eval/tiny/dense/general.json", "results/eval/tiny/magnitude/0.5/none/seed0/general.json"]
UPGRADE_TORCH = """\
import importlib.metadata

_real = importlib.metadata.version
importlib.metadata.version = lambda name: _real(name) + ".upgraded" if name == "torch" else _real(name)
"""


def _plan(workdir: Path, config: dict, *args: str, env: dict | None = None) -> dict[str, str]:
    """{rule: reason} of the jobs a dry run plans for TARGETS."""
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "1", *args, "--", *TARGETS]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(re.findall(r"^rule (\w+):\n(?:    .*\n)*?    reason: (.*)", result.stdout, flags=re.M))


@pytest.mark.workflow
def test_the_workflow_reruns_the_prune_and_evaluation_jobs_after_a_revision_edit_or_an_upgrade(tmp_path):
    """A finished hub-model study (simulated with `snakemake --touch`, which records every job's params):
    editing the revision refetches the model and so plans the jobs that prune and score it (each then
    decides by its keys what to redo: the tests above); a torch upgrade plans them by their params."""
    for path in ["results/world/eval/world_general.jsonl", *TARGETS,
                 *[p.removesuffix(".json") + ".items.parquet" for p in TARGETS],
                 "results/prune_reports/tiny/magnitude/0.5/none/seed0.json"]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    (tmp_path / "results/models").mkdir()
    (tmp_path / "results/models/tiny.json").write_text(json.dumps({"bytes": 0}))
    _plan(tmp_path, HUB_STUDY, "--touch", "--forceall")

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(UPGRADE_TORCH)
    pythonpath = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    upgraded = _plan(tmp_path, HUB_STUDY, "-n", env={"PYTHONPATH": pythonpath})
    assert set(upgraded) == {"evaluate_dense", "prune_and_evaluate_seed"}
    assert all("Params have changed" in reason for reason in upgraded.values())

    edited = {**HUB_STUDY, "models": {"tiny": {**HUB_STUDY["models"]["tiny"], "revision": REVISIONS["instruct"][0]}}}
    planned = _plan(tmp_path, edited, "-n")
    assert set(planned) == {"fetch_model", "evaluate_dense", "prune_and_evaluate_seed"}
    assert "Params have changed" in planned["fetch_model"]
    assert "results/models/tiny.json" in planned["prune_and_evaluate_seed"]
