"""Every JSON file the workflow writes has the keys (and value types) its calmix.core.records type lists.

The files are made by the workflow's own scripts, run in this process on tiny inputs with a stand-in
for the ``snakemake`` object: corpora of every kind, the world model, token files, shards (sampled,
mixed and self-generated), pools, metrics, pruned checkpoints and evaluations; the two fetch scripts
run with the hub and lm-eval's task index replaced. Each file is read back from disk and checked
against its TypedDict, nested records included: required keys <= written keys <= required + optional.
A last test asks that every key a type lists is written by some writer, so a type cannot keep a key
no writer sets any more.
"""

import json
import runpy
import subprocess
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

import pyarrow.parquet as pq
import pytest
from snakemake.iocontainers import Namedlist

from calmix.core import records
from calmix.world.domain import World

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"

NSAMPLES, SEQLEN = 4, 16
ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2, "max_position_embeddings": 128}
TRAIN = {"steps": 2, "batch_size": 2, "seqlen": 16, "lr": 0.003, "bf16": False, "seed": 0, "threads": 1}
PRUNING = {"skip": [], "blocksize": 128, "percdamp": 0.01, "wanda_variant": "cumulative", "true_sequential": False,
           "batch_size": 2, "owl_m": 5.0, "owl_lmbda": 0.08}
#: (pruned-set label, target, calibration set): damping and OWL's profile, cumulative Wanda's alpha, N:M data-free.
PRUNED = [("sparsegpt-owl", "0.5", "web"), ("wanda", "0.5", "web"), ("magnitude", "2of4", "none")]
#: Keys no tiny run writes: a group task's subtasks need an lm-eval group (built-in ones come from the hub).
NOT_EXERCISED = {"TaskSummary": {"subtasks"}, "CorpusManifest": {"packages", "unreadable"}}  # installed: test_real_model
#: Records no world study writes (GGUF models, offline task items): tests/test_real_model.py checks them.
REAL_MODEL_RECORDS = ("GgufFetchManifest", "GgufFacts", "ConversionManifest", "TaskItemsManifest")


# --------------------------------------------------------------------------------------------
# Checking a JSON value against a record type
# --------------------------------------------------------------------------------------------


def check(value: Any, hint: Any, where: str = "$", seen: dict[str, set[str]] | None = None) -> None:
    """Assert that a JSON value (as read back from disk) has the shape ``hint`` describes; record in
    ``seen`` the keys found per TypedDict."""
    if hint is Any:
        return
    if is_typeddict(hint):
        assert isinstance(value, dict), f"{where}: {hint.__name__} expected, got {value!r}"
        keys, required, optional = set(value), hint.__required_keys__, hint.__optional_keys__
        assert required <= keys, f"{where}: {hint.__name__} lacks {sorted(required - keys)}"
        assert keys <= required | optional, f"{where}: keys {sorted(keys - required - optional)} are not in {hint.__name__}"
        if seen is not None:
            seen.setdefault(hint.__name__, set()).update(keys)
        hints = get_type_hints(hint)
        for key, item in value.items():
            check(item, hints[key], f"{where}.{key}", seen)
        return
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        for arg in args:
            try:
                check(value, arg, where, None)
            except AssertionError:
                continue
            check(value, arg, where, seen)
            return
        raise AssertionError(f"{where}: {value!r} is none of {hint}")
    if origin is Literal:
        assert value in args, f"{where}: {value!r} is not one of {args}"
    elif origin is list:
        assert isinstance(value, list), f"{where}: list expected, got {value!r}"
        for i, item in enumerate(value):
            check(item, args[0], f"{where}[{i}]", seen)
    elif origin is dict:
        assert isinstance(value, dict), f"{where}: dict expected, got {value!r}"
        for key, item in value.items():
            assert isinstance(key, str), f"{where}: key {key!r}"
            check(item, args[1], f"{where}.{key}", seen)
    elif hint is type(None):
        assert value is None, f"{where}: None expected, got {value!r}"
    elif hint is float:  # JSON writes 2.0 as 2.0, but a knob given as 5 stays 5
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: number expected, got {value!r}"
    elif hint in (int, str, bool):
        assert isinstance(value, hint) and (hint is bool or not isinstance(value, bool)), \
            f"{where}: {hint.__name__} expected, got {value!r}"
    else:
        raise TypeError(f"{where}: the check does not know {hint!r}")


def read(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def check_file(path: Path, record: type, seen: dict[str, set[str]] | None = None) -> dict:
    written = read(path)
    if record is records.MetricsRecord:  # plus one number per configured metric
        from calmix.calibration.metrics import METRICS

        fixed = set(record.__required_keys__)
        assert set(written) - fixed <= set(METRICS), sorted(set(written) - fixed - set(METRICS))
        assert all(isinstance(written[k], (int, float)) for k in set(written) - fixed)
        check({k: v for k, v in written.items() if k in fixed}, record, str(path), seen)
    else:
        check(written, record, str(path), seen)
    return written


# --------------------------------------------------------------------------------------------
# Running a workflow script as Snakemake would
# --------------------------------------------------------------------------------------------


def _paths_as_str(value):
    if isinstance(value, Path):
        return str(value)
    return [_paths_as_str(v) for v in value] if isinstance(value, list) else value


def _named(values) -> Namedlist:
    if isinstance(values, dict):
        return Namedlist(fromdict={k: _paths_as_str(v) for k, v in values.items()})
    return Namedlist([str(v) for v in values])


@contextmanager
def patched(*patches: tuple[Any, str, Any], cwd: Path | None = None):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("calmix.core.logs.setup_logging", lambda *args, **kwargs: None)  # keep pytest's streams
        for target, name, value in patches:
            mp.setattr(target, name, value)
        if cwd is not None:
            mp.chdir(cwd)
        yield


def run_script(name: str, *, input=(), output=(), params=None, wildcards=None, cwd: Path | None = None,
               patches=()) -> None:
    snakemake = SimpleNamespace(
        input=_named(input), output=_named(output), params=_named(params or {}), wildcards=_named(wildcards or {}),
        log=_named(["unused.log"]), threads=1, scriptdir=str(SCRIPTS),
    )
    with patched(*patches, cwd=cwd):
        runpy.run_path(str(SCRIPTS / name), init_globals={"snakemake": snakemake}, run_name="__main__")


# --------------------------------------------------------------------------------------------
# A tiny study, one script at a time
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("study")


@pytest.fixture(scope="module")
def corpora(root) -> dict[str, Path]:
    """Corpus manifests of every provenance: the world's pretraining corpus, world sources, a local
    file, a hub dataset (revision resolved) and a dataset folder on disk (no revision)."""
    from calmix.fetch import hub

    out = root / "results" / "corpora"
    run_script("world_corpus.py", output={"corpus": root / "results/world/pretrain.jsonl",
                                          "manifest": root / "results/world/pretrain.json"},
               params={"seed": 0, "docs": 60})
    local = root / "data" / "qa.jsonl"
    local.parent.mkdir(parents=True)
    local.write_text("".join(json.dumps({"q": f"question {i}", "a": f"answer {i}"}) + "\n" for i in range(5)))
    folder = root / "data" / "folder_dataset"
    folder.mkdir()
    specs = {
        "web": ({"kind": "world", "generator": "web", "docs": 40}, 0),
        "code": ({"kind": "world", "generator": "code", "docs": 40}, 0),
        "local": ({"kind": "local", "path": str(local), "template": "{q}\n{a}"}, None),
        "hub": ({"kind": "hub", "path": "org/dataset", "revision": "main", "split": "train"}, None),
        "folder": ({"kind": "hub", "path": str(folder), "split": "train"}, None),
    }
    fake_rows = [{"text": f"row {i} of a dataset"} for i in range(5)]
    patches = [(hub, "load_dataset", lambda path, **kwargs: fake_rows),
               (hub, "resolve_dataset_revision", lambda path, revision: "a" * 40)]
    for name, (spec, world_seed) in specs.items():
        run_script("corpus.py", output={"corpus": out / f"{name}.jsonl", "manifest": out / f"{name}.json"},
                   params={"spec": spec, "world_seed": world_seed}, wildcards={"calib": name}, patches=patches)
    return {"pretrain": root / "results/world/pretrain.json", **{name: out / f"{name}.json" for name in specs}}


@pytest.fixture(scope="module")
def model(root, corpora) -> Path:
    path = root / "results" / "models" / "world"
    run_script("train_world_model.py", input=[root / "results/world/pretrain.jsonl"], output=[path],
               params={"vocab_size": 300, "arch": ARCH, "train": TRAIN})
    return path


@pytest.fixture(scope="module")
def tokens(root, corpora, model) -> dict[str, Path]:
    out = {}
    for calib in ("web", "code"):
        path = root / "results" / "tokens" / "world" / f"{calib}.parquet"
        run_script("tokenize_corpus.py", input={"corpus": corpora[calib].with_suffix(".jsonl"), "model": model},
                   output={"tokens": path, "manifest": path.with_suffix(".json")},
                   params={"model_manifest": "training.json"}, wildcards={"model": "world", "calib": calib})
        out[calib] = path
    return out


def shard_path(root: Path, calib: str, seed: int = 0) -> Path:
    return root / "results" / "shards" / "world" / calib / f"seed{seed}.parquet"


@pytest.fixture(scope="module")
def shards(root, corpora, tokens) -> dict[str, Path]:
    """A source's shard per sampling mode, and a mix of the two."""
    sampling = {"web": {"sampling": "windows", "bos": "none"}, "code": {"sampling": "documents", "bos": "document"}}
    for calib, knobs in sampling.items():
        path = shard_path(root, calib)
        run_script("shard.py", input=[tokens[calib]], output={"shard": path, "manifest": path.with_suffix(".json")},
                   params={"spec": read(corpora[calib])["spec"], "sampling": knobs, "nsamples": NSAMPLES,
                           "seqlen": SEQLEN},
                   wildcards={"model": "world", "calib": calib, "seed": "0"})
    path = shard_path(root, "mixed")
    run_script("mix.py", input={s: shard_path(root, s) for s in sampling},
               output={"shard": path, "manifest": path.with_suffix(".json")},
               params={"spec": {"kind": "mix", "weights": {"web": 1.0, "code": 2.0}}, "nsamples": NSAMPLES,
                       "seqlen": SEQLEN},
               wildcards={"model": "world", "calib": "mixed", "seed": "0"})
    return {calib: shard_path(root, calib).with_suffix(".json") for calib in (*sampling, "mixed")}


@pytest.fixture(scope="module")
def built(root, model, tokens) -> dict[str, tuple[Path, Path]]:
    """(pool manifest, shard manifest) of each self-generated builder kind."""
    from calmix.calibration import builders

    out = {}
    for kind in ("selfcal", "sgs", "igsp"):
        knobs = builders.self_generation({"kind": kind}, NSAMPLES, 2, "web")
        pool = root / "results" / "pools" / "world" / kind / "seed0.parquet"
        wildcards = {"model": "world", "calib": kind, "seed": "0"}
        run_script("generate_pool.py",
                   input={"model": model, **({"documents": tokens[knobs["prefix_source"]]} if knobs["prefix_source"] else {})},
                   output={"pool": pool, "manifest": pool.with_suffix(".json")},
                   params={"kind": kind, "size": knobs["size"], "generation": knobs["generation"], "batch_size": 4,
                           "score_batch_size": 4, "seqlen": SEQLEN, "dtype": "float32", "model_manifest": "training.json", "device": "cpu"},
                   wildcards=wildcards)
        shard = shard_path(root, kind)
        run_script("select_windows.py", input={"pool": pool}, output={"shard": shard, "manifest": shard.with_suffix(".json")},
                   params={"kind": kind, "selection": knobs["selection"], "nsamples": NSAMPLES}, wildcards=wildcards)
        out[kind] = (pool.with_suffix(".json"), shard.with_suffix(".json"))
    return out


@pytest.fixture(scope="module")
def metrics(root, model, shards) -> Path:
    from calmix.calibration.metrics import METRICS

    path = root / "results" / "metrics" / "world" / "web" / "seed0.json"
    run_script("metrics.py", input={"shards": [shard_path(root, "web")], "model": model}, output=[path],
               params={"metrics": sorted(METRICS), "seeds": [0], "batch_size": 16, "dtype": "float32",
                       "model_manifest": "training.json", "device": "cpu"},
               wildcards={"model": "world", "calib": "web", "seed": "0"})
    return path


def pruned_dir(root: Path, method: str, target: str, calib: str) -> Path:
    return root / "results" / "pruned" / "world" / method / target / calib / "seed0"


@pytest.fixture(scope="module")
def dimensions(root) -> tuple[dict, dict]:
    """(dimensions, data) of a mean and a perplexity dimension over the world's evaluation items."""
    tasks = {"general": "world_general", "perplexity": "world_perplexity"}
    data = {}
    for dimension, task in tasks.items():
        items = root / "results" / "world" / "eval" / f"{task}.jsonl"
        run_script("world_eval_items.py", output=[items], params={"seed": 0, "n": 6}, wildcards={"task": task})
        data[dimension] = [str(items.relative_to(root))]
    harness = {"batch_size": 8, "limit": 4, "seed": 1234}
    return {d: {"tasks": [t], "harness": {**harness, "task_num_fewshot": {t: 0}}, "task_definitions": {}}
            for d, t in tasks.items()}, data


def _evaluation_outputs(folder: Path, dimensions: dict) -> dict[str, list[Path]]:
    return {"scores": [folder / f"{d}.json" for d in dimensions],
            "per_item": [folder / f"{d}.items.parquet" for d in dimensions]}


@pytest.fixture(scope="module")
def pruned(root, model, shards, dimensions) -> tuple[list[Path], list[Path]]:
    """(prune reports, eval records) of every pruned set, each kept checkpoint made by a prune job and
    scored by an evaluate_pruned job, as the world study does."""
    from calmix.pruning import registry, targets

    dims, data = dimensions
    reports, scores = [], []
    for method, target, calib in PRUNED:
        out = pruned_dir(root, method, target, calib)
        report = root / "results" / "prune_reports" / "world" / method / target / calib / "seed0.json"
        outputs = _evaluation_outputs(root / f"results/eval/world/{method}/{target}/{calib}/seed0", dims)
        run_script("prune.py", input={"model": model, **({"shards": [shard_path(root, calib)]} if calib != "none" else {})},
                   output={"reports": [report], "checkpoints": [out]},
                   params={"options": registry.options(method, PRUNING), "pruning_code": {"test": "0"}, "dtype": "float32",
                           "model_manifest": "training.json", "device": "cpu"},
                   wildcards={"model": "world", "method": method, "target": target, "calib": calib, "seed": "0"}, cwd=root)
        identity = {"model": "world", "method": method, "sparsity": targets.display(target), "calib": calib, "seed": 0}
        run_script("evaluate_pruned.py", input={"model": model, "checkpoints": [out]}, output=outputs,
                   params={"identities": [identity], "evaluation_code": "test", "dtype": "float32",
                           "model_manifest": "training.json", "dimensions": dims, "data": data,
                           "task_dir": "resources/lm_eval_tasks", "device": "cpu"},
                   wildcards={"model": "world", "calib": calib}, cwd=root)
        reports += [out / "prune_report.json", report]
        scores += outputs["scores"]
    return reports, scores


@pytest.fixture(scope="module")
def evaluations(root, model, pruned, dimensions) -> list[Path]:
    """Eval records of the dense model (a mean and a perplexity dimension) and of the first pruned set."""
    dims, data = dimensions
    outputs = _evaluation_outputs(root / "results/eval/world/dense", dims)
    run_script("evaluate.py", input={"model": model}, output=outputs,
               params={"dimensions": dims, "data": data, "code": "test", "dtype": "float32",
                       "model_manifest": "training.json", "task_dir": "resources/lm_eval_tasks", "device": "cpu"},
               wildcards={"model": "world"}, cwd=root)
    return outputs["scores"] + pruned[1][:len(dims)]


@pytest.fixture(scope="module")
def fetched(root) -> Path:
    """A hub model's fetch manifest, the hub replaced by a snapshot folder on disk."""
    from calmix.fetch import hub

    snapshot = root / "hub" / ("b" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"\0" * 100)
    path = root / "results" / "models" / "hubmodel.json"
    run_script("fetch_model.py", output=[path], params={"spec": {"kind": "hub", "path": "org/model", "revision": "main"}},
               wildcards={"model": "hubmodel"}, patches=[(hub, "download_model", lambda repo, revision: (snapshot, snapshot.name))])
    return path


class FakeTaskManager:
    """lm-eval's task index with one built-in group of two leaf tasks (no hub needed)."""

    all_tasks = ["fake_group"]

    def __init__(self, *args, **kwargs):
        pass

    def load(self, names):
        def leaf(name, kwargs):
            return SimpleNamespace(config=SimpleNamespace(dataset_path="org/tasks", dataset_name=name, dataset_kwargs=kwargs))

        return {"tasks": {"fake_a": leaf("a", {"revision": "c" * 40}), "fake_b": leaf("b", None)}}


@pytest.fixture(scope="module")
def task_data(root) -> Path:
    import lm_eval.tasks

    from calmix.fetch import hub

    path = root / "results" / "eval" / "data" / "general.json"
    run_script("fetch_task_data.py", output=[path], params={"tasks": ["fake_group"]}, wildcards={"dimension": "general"},
               patches=[(lm_eval.tasks, "TaskManager", FakeTaskManager), (hub, "unreachable_reason", lambda: None)])
    return path


@pytest.fixture(scope="module")
def heldout_check(root, corpora, dimensions) -> Path:
    """The held-out check of the world's perplexity items against two world sources."""
    path = root / "results" / "eval" / "heldout_check.json"
    run_script("heldout_check.py", input={"heldout": [root / "results/world/eval/world_perplexity.jsonl"],
                                          "corpora": [root / "results/corpora/web.jsonl", root / "results/corpora/code.jsonl"]},
               output=[path], params={"tasks": ["world_perplexity"], "sources": ["web", "code"]})
    return path


# --------------------------------------------------------------------------------------------
# The files against their types
# --------------------------------------------------------------------------------------------


def test_corpus_manifests(corpora):
    for path in corpora.values():
        check_file(path, records.CorpusManifest)
    assert read(corpora["hub"])["resolved_revision"] == "a" * 40
    assert "resolved_revision" not in read(corpora["folder"])


def test_token_manifests(tokens):
    for path in tokens.values():
        check_file(path.with_suffix(".json"), records.TokenManifest)


def test_shard_manifests(shards, built):
    for path in [*shards.values(), *(shard for _, shard in built.values())]:
        check_file(path, records.ShardManifest)
    assert "kind" not in read(shards["web"]) and read(shards["mixed"])["kind"] == "mix"


def test_pool_manifests(built):
    for pool, shard in built.values():
        manifest = check_file(pool, records.PoolManifest)
        assert read(shard)["pool"] == {k: v for k, v in manifest.items() if k != "scores"}


def test_training_manifest(model):
    check_file(model / "training.json", records.TrainingManifest)


def test_fetch_manifest(fetched):
    manifest = check_file(fetched, records.FetchManifest)
    assert manifest["bytes"] == 102


def test_task_data_manifest(task_data):
    check_file(task_data, records.TaskDataManifest)


def test_heldout_check_record(heldout_check):
    record = check_file(heldout_check, records.HeldoutCheckRecord)
    assert record["sources"] == {"web": 40, "code": 40} and record["tasks"]["world_perplexity"]["items"] == 6


def test_metrics_record(metrics):
    check_file(metrics, records.MetricsRecord)


def test_prune_reports(pruned):
    for path in pruned[0]:
        check_file(path, records.PruneReport)


def test_eval_records_and_their_items(evaluations):
    for path in evaluations:
        check_file(path, records.EvalRecord)
        items = pq.read_table(path.with_name(path.name.removesuffix(".json") + ".items.parquet"))
        assert items.column_names == list(records.ItemScore.__annotations__)
    assert {read(p)["tasks"][t]["aggregation"] for p, t in zip(evaluations, ["world_general", "world_perplexity"] * 2)} \
        == {"mean", "perplexity"}


def test_prune_model_report():
    """prune_model's own return, on a tiny LLaMA (what prune_report.json extends)."""
    import torch
    import transformers

    from calmix.pruning.driver import prune_model

    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                      intermediate_size=128, vocab_size=100, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(config).eval()
    windows = torch.randint(0, 100, (4, 16), generator=torch.Generator().manual_seed(1))
    report = prune_model(model, windows, 0.5, method="magnitude")
    check(json.loads(json.dumps(report)), records.PruneModelReport)
    assert set(records.PruneReport.__required_keys__) - set(report) == {
        "target", "shard", "shard_sha256", "dense_model", "verified", "job_wall_time_s", "weights_sha256",
        "prune_key",
    }


def test_writers_return_what_they_write(tmp_path, world_tokenizer):
    """The typed manifest a writer returns is what it wrote (every key and value)."""
    import numpy as np

    from calmix.calibration.corpora import write_corpus
    from calmix.calibration.pools import write_pool
    from calmix.calibration.shards import build_shard, tokenize_corpus, write_tokens
    from calmix.models.loading import write_checkpoint_manifest

    docs = [{"id": f"web:{i}", "text": t} for i, t in enumerate(World(0).documents("web", 20, seed=1))]
    spec = {"kind": "world", "generator": "web", "docs": 20}
    corpus = write_corpus(docs, tmp_path / "corpora" / "web.jsonl", "web", spec, {"world_seed": 0})
    ids = tokenize_corpus(docs, world_tokenizer, "web")
    tokens = write_tokens(tmp_path / "tokens" / "web.parquet", ids, [d["id"] for d in docs], {
        "source": "web", "corpus_sha256": corpus["sha256"], "tokenizer_sha256": "t", "bos_id": 0, "eos_id": 1})
    shard = build_shard(ids, [d["id"] for d in docs], nsamples=4, seqlen=16, seed=0, source="web", spec=spec,
                        sampling="windows", bos="none", bos_id=None, eos_id=1, tokens_sha256=tokens["sha256"],
                        tokenizer_sha256="t", path=tmp_path / "shards" / "seed0.parquet")
    pool = write_pool(np.zeros((3, 16), dtype=np.int64), {"perplexity": np.ones(3)}, tmp_path / "pools" / "seed0.parquet",
                      {"builder": "selfcal"})
    (tmp_path / "checkpoint").mkdir()
    checkpoint = write_checkpoint_manifest(tmp_path / "checkpoint", "training.json", steps=1)
    for returned, path in [(corpus, "corpora/web.json"), (tokens, "tokens/web.json"), (shard, "shards/seed0.json"),
                           (pool, "pools/seed0.json"), (checkpoint, "checkpoint/training.json")]:
        assert read(tmp_path / path) == json.loads(json.dumps(returned)), path
    check(read(tmp_path / "corpora/web.json"), records.CorpusManifest)
    check(read(tmp_path / "tokens/web.json"), records.TokenManifest)
    check(read(tmp_path / "shards/seed0.json"), records.ShardManifest)


def test_every_listed_key_is_written(corpora, model, tokens, shards, built, metrics, pruned, evaluations, fetched,
                                     task_data, heldout_check):
    """A key a record type lists but no writer sets is a stale type (NOT_EXERCISED: keys no tiny run reaches)."""
    seen: dict[str, set[str]] = {}
    files = [
        *[(p, records.CorpusManifest) for p in corpora.values()],
        *[(p.with_suffix(".json"), records.TokenManifest) for p in tokens.values()],
        *[(p, records.ShardManifest) for p in shards.values()],
        *[(p, records.PoolManifest) for p, _ in built.values()],
        *[(p, records.ShardManifest) for _, p in built.values()],
        (model / "training.json", records.TrainingManifest),
        (metrics, records.MetricsRecord),
        (fetched, records.FetchManifest),
        (task_data, records.TaskDataManifest),
        (heldout_check, records.HeldoutCheckRecord),
        *[(p, records.PruneReport) for p in pruned[0]],
        *[(p, records.EvalRecord) for p in evaluations],
    ]
    for path, record in files:
        check_file(path, record, seen)
    for name in dir(records):
        record = getattr(records, name)
        if not is_typeddict(record) or record.__module__ != records.__name__:
            continue
        listed = set(record.__required_keys__ | record.__optional_keys__)
        if name in ("CorpusProvenance", "TokenProvenance", "PoolGeneration", "TrainingSummary", "PruneModelReport",
                    "EvalResult", "ItemScore", "ConversionSummary"):
            continue  # parts a writer is handed or returns: the files hold their keys under the full type (items: parquet)
        if name in REAL_MODEL_RECORDS:
            continue  # written by the real-model study: tests/test_real_model.py checks them
        missing = listed - seen.get(name, set()) - NOT_EXERCISED.get(name, set())
        assert not missing, f"{name}: no writer wrote {sorted(missing)}"


def test_import_is_light():
    """Snakefiles, calmix-verify and light jobs import the record types without a deep-learning stack."""
    code = (
        "import sys, calmix.core.records; "
        "heavy = [m for m in ('torch', 'numpy', 'pandas', 'pyarrow', 'transformers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
