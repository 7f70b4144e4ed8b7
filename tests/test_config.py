"""Config validation: defaults filled from the schema, and each bad config names its key and what to do."""

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from calmix.calibration import builders
from calmix.config import ConfigError, read_config_file, read_config_files, validate_config
from calmix.config.checks import llama_linear_names
from calmix.config.kinds import KEYS_BY_KIND, LLAMA_LIKE
from calmix.config.schema import PATTERN_WORDS, SCHEMA_PATH
from calmix.pruning import plan, registry

REPO = Path(__file__).resolve().parent.parent

BASE = {
    "models": {"world": {"kind": "world"}},
    "calibration": {"sources": {"web": {"kind": "world", "generator": "web"}}},
    "evaluation": {"dimensions": {"general": {"tasks": ["world_general"]}}},
}

LOCAL_SOURCE = {"kind": "local", "path": "docs.jsonl"}
HUB_SOURCE = {"kind": "hub", "path": "allenai/c4", "revision": "607bd4c8450a42878aa9ddc051a65a055450ef87"}
HUB_MODEL = {"kind": "hub", "path": "meta-llama/Llama-3.1-8B", "revision": "d04e592bb4f6aa9cfee91e2e20afa771667e1d4b"}


def _config(**edits):
    """BASE with edits: a__b=value sets config[a][b] (a value given as Y('...') is what YAML reads)."""
    config = copy.deepcopy(BASE)
    for path, value in edits.items():
        *parents, last = path.split("__")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = copy.deepcopy(value)  # validation fills defaults in: keep the cases as written
    return config


def Y(text):
    """What PyYAML's safe_load (as Snakemake's loader) reads from a YAML snippet."""
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory with a jsonl file, a text file and a save_pretrained-like LLaMA folder."""
    root = tmp_path_factory.mktemp("workdir")
    (root / "docs.jsonl").write_text("".join(json.dumps({"text": f"doc {i}", "q": "?"}) + "\n" for i in range(3)))
    (root / "notes.txt").write_text("one\n\ntwo\n")
    (root / "llama").mkdir()
    (root / "llama" / "config.json").write_text(json.dumps({
        "model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 100,
        "num_attention_heads": 4, "max_position_embeddings": 64,
    }))
    (root / "opt").mkdir()
    (root / "opt" / "config.json").write_text(json.dumps({"model_type": "opt", "num_hidden_layers": 2}))
    return root


def test_defaults_come_from_the_schema():
    config = validate_config(_config())
    assert config["pruning"]["methods"] == ["sparsegpt"] and config["pruning"]["sparsities"] == [0.6]
    assert config["pruning"]["structures"] == ["unstructured"] and config["pruning"]["percdamp"] == 0.01
    assert config["device"] == "cpu"
    assert config["calibration"]["nsamples"] == 64 and config["calibration"]["seeds"] == [0]
    assert config["calibration"]["sampling"] == "windows" and config["calibration"]["bos"] == "none"
    assert config["calibration"]["sources"]["web"] == {"kind": "world", "generator": "web"}  # no other kind's keys
    assert config["world"]["model"]["hidden_size"] == 128


@pytest.mark.parametrize("path", ["config.yaml", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "experiments").glob("*.yaml"))])
def test_shipped_configs_are_valid(path):
    validate_config(read_config_file(REPO / path), workdir=REPO)


def world(**edits):
    return {"kind": "world", "generator": "web", **edits}


def local(**edits):
    return {**LOCAL_SOURCE, **edits}


def hub(**edits):
    return {**HUB_SOURCE, **edits}


BAD = [
    # --- unknown keys, choices, ranges, names
    ({"pruning__bogus": 1}, "pruning.bogus", "unknown key. Allowed here: batch_size"),
    ({"pruning__blocksiez": 64}, "pruning.blocksiez", "did you mean 'blocksize'?"),
    ({"calibration__sources": {"x": world(bogus=1)}}, "calibration.sources.x.bogus", "A world source's keys: kind, generator, docs"),
    ({"calibration__sources": {"x": {"kind": "hubb"}}}, "calibration.sources.x.kind", "is not one of: world, local, hub"),
    ({"pruning__methods": ["obc"]}, "pruning.methods[0]", "is not one of: sparsegpt, wanda, magnitude"),
    ({"pruning__methods": ["SparseGPT"]}, "pruning.methods[0]", "did you mean 'sparsegpt'?"),
    ({"pruning__structures": ["3:4"]}, "pruning.structures[0]", "is not one of: unstructured, 2:4, 4:8"),
    ({"calibration__sampling": "Documents"}, "calibration.sampling", "did you mean 'documents'?"),
    ({"pruning__sparsities": [1.5]}, "pruning.sparsities[0]", "1.5 must be > 0 and < 1"),
    ({"pruning__sparsities": [0.0]}, "pruning.sparsities[0]", "0.0 must be > 0 and < 1"),
    ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "num_fewshot": -1}}}, "evaluation.dimensions.g.num_fewshot", "-1 must be >= 0"),
    ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "limit": 0}}}, "evaluation.dimensions.g.limit", "0 must be >= 1"),
    ({"calibration__builders": {"i": {"kind": "igsp", "repetition_threshold": 2}}}, "calibration.builders.i.repetition_threshold", "2 must be >= 0 and <= 1"),
    ({"world__vocab_size": 200}, "world.vocab_size", "200 must be >= 300 and <= 65536"),
    ({"evaluation__dimensions": {"math": {"tasks": []}}}, "evaluation.dimensions.math.tasks", "should be non-empty; list at least 1 value"),
    ({"pruning__methods": []}, "pruning.methods", "choose from: sparsegpt, wanda, magnitude"),
    ({"models": {}}, "models", "is empty; define at least 1 entry"),
    ({"pruning__methods": ["wanda", "wanda"]}, "pruning.methods", "'wanda' is listed twice; list each value once"),
    ({"calibration__seeds": [0, 0]}, "calibration.seeds", "0 is listed twice"),
    ({"calibration__sources": {"none": world()}}, "calibration.sources.none", "reserved for data-free pruning; rename it"),
    ({"calibration__sources": {"a b": world()}}, "calibration.sources.a b", "(it becomes part of file names); rename it"),
    ({"calibration__builders": {"m/x": {"kind": "mix"}}}, "calibration.builders.m/x", "only letters, digits, '_', '.' and '-'"),
    ({"evaluation__dimensions": {"a.b": {"tasks": ["world_general"]}}}, "evaluation.dimensions.a.b", "a dimension name may hold only"),
    ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "metric": {"": "acc,none"}}}}, "evaluation.dimensions.g.metric.", "the name is empty"),
    ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "shots": 5}}}, "evaluation.dimensions.g.shots", "unknown key"),
    ({"calibration__sources": {"x": local(template="")}}, "calibration.sources.x.template", "is empty; write a value or leave the key out"),
    ({"calibration__sources": {"x": {"kind": "local"}}}, "calibration.sources.x.path", "required but missing (a local source needs it); add it"),
    ({"calibration__sources": {"x": {"kind": "world"}}}, "calibration.sources.x.generator", "a world source needs it"),
    ({"models": {"m": {"kind": "hub", "path": "meta-llama/Llama-3.1-8B"}}}, "models.m.revision", "a hub model needs it"),
    ({"models": {"m": {"kind": "local"}}}, "models.m.path", "a local model needs it"),
    ({"evaluation": {}}, "evaluation.dimensions", "required but missing"),
    # --- names and references
    ({"calibration__sources": {"x": local(path="no/such/file.txt")}}, "calibration.sources.x.path", "no file matches"),
    ({"calibration__sources": {"x": {"kind": "hub", "path": "allenai/c4"}}},
     "calibration.sources.x.revision", "pin the commit sha"),
    ({"calibration__sources": {"x": world(generator="nope")}}, "calibration.sources.x.generator", "unknown world generator 'nope'. Choose one of"),
    ({"metrics": ["perplexity", "nope"]}, "metrics[1]", "unknown metric 'nope'. Choose from"),
    ({"models": {"m": {"kind": "local", "path": "nowhere"}}}, "models.m.path", "point it at the folder that holds config.json"),
    ({"evaluation__dimensions": {"total": {"tasks": ["world_general"]}}}, "evaluation.dimensions.total",
     "'total' is a name the retention tables give the mean over all dimensions"),
    ({"evaluation__dimensions": {"g": {"tasks": ["world_generl"]}}}, "evaluation.dimensions.g.tasks[0]",
     "unknown task 'world_generl' (did you mean 'world_general'?): it is no YAML of resources/lm_eval_tasks"),
    ({"evaluation__dimensions": {"g": {"tasks": ["gsm8kk"]}}}, "evaluation.dimensions.g.tasks[0]", "did you mean 'gsm8k'"),
    ({"evaluation__dimensions": {"g": {"tasks": ["/tmp/evil/x"]}}}, "evaluation.dimensions.g.tasks[0]", "'/tmp/evil/x' is not a task name"),
    ({"evaluation__dimensions": {"g": {"tasks": ["../../../tmp/x"]}}}, "evaluation.dimensions.g.tasks[0]", "(never a path)"),
    ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "metric": {"world_code": "acc,none"}}}},
     "evaluation.dimensions.g.metric.world_code", "not a task of this dimension. Its tasks: world_general"),
    ({"calibration__builders": {"web": {"kind": "mix"}}}, "calibration.builders.web", "also a source; a builder needs a name of its own"),
    ({"calibration__builders": {"m": {"kind": "mix", "sources": ["web", "poetry"]}}}, "calibration.builders.m.sources", "'poetry' is not a calibration source. Choose from: web"),
    ({"calibration__builders": {"m": {"kind": "blend"}}}, "calibration.builders.m.kind", "is not one of: mix, selfcal, sgs, igsp"),
    ({"calibration__builders": {"m": {"kind": "mix", "top_k": 5}}}, "calibration.builders.m.top_k", "does not read 'top_k'. Its knobs: sources"),
    ({"calibration__builders": {"s": {"kind": "selfcal", "filter_quantile": 0.1}}}, "calibration.builders.s.filter_quantile", "does not read"),
    ({"calibration__builders": {"s": {"kind": "sgs", "prefix_source": "poetry"}}}, "calibration.builders.s.prefix_source", "not a calibration source"),
    ({"report__baseline": "poetry"}, "report.baseline", "not a calibration source. Choose from: web"),
    ({"report__controls": ["web", "noise"]}, "report.controls[1]", "not a calibration source. Choose from: web"),
    # --- 1. integers given as floats, and other numbers YAML read otherwise
    ({"calibration__nsamples": 8.0}, "calibration.nsamples", "8.0 is a float; write a whole number (8)"),
    ({"calibration__sources": {"x": world(docs=40.0)}}, "calibration.sources.x.docs", "40.0 is a float; write a whole number (40)"),
    ({"calibration__seeds": Y("[0.0, 1.0]")}, "calibration.seeds[0]", "0.0 is a float; write a whole number (0)"),
    ({"world__model": {"hidden_size": 128.0}}, "world.model.hidden_size", "128.0 is a float; write a whole number (128)"),
    ({"evaluation__limit": 5.0}, "evaluation.limit", "5.0 is a float; write a whole number (5)"),
    ({"calibration__sources": {"x": local(max_docs=7473.0)}}, "calibration.sources.x.max_docs", "7473.0 is a float"),
    ({"calibration__builders": {"s": {"kind": "sgs", "top_k": 50.0}}}, "calibration.builders.s.top_k", "50.0 is a float"),
    ({"calibration__nsamples": 8.5}, "calibration.nsamples", "8.5 is not a whole number; write one, e.g. 8 or 9"),
    ({"calibration__nsamples": "many"}, "calibration.nsamples", "the text 'many' is not a whole number; write a whole number, e.g. 64"),
    ({"calibration__nsamples": Y("yes")}, "calibration.nsamples", "boolean true (an unquoted yes, true or on); write a whole number"),
    ({"pruning__batch_size": "4"}, "pruning.batch_size", "'4' is quoted text; write it without quotes: 4"),
    ({"world__train": Y("{lr: 1e-3}")}, "world.train.lr", "YAML 1.1 reads 1e-3 as text (its floats need a dot); write 0.001 or 1.0e-3"),
    ({"pruning__percdamp": Y(".nan")}, "pruning.percdamp", "nan is not a finite number; write a number"),
    ({"pruning__sparsities": [Y(".inf")]}, "pruning.sparsities[0]", "inf is not a finite number"),
    ({"pruning__blocksize": None}, "pruning.blocksize", "has no value (YAML reads an empty value as null); write a whole number, e.g. 128"),
    ({"calibration__seeds": 0}, "calibration.seeds", "not a list; write a list, e.g. [0]"),
    ({"pruning__true_sequential": "yes"}, "pruning.true_sequential", "write true or false"),
    # --- 2. names and values YAML read as numbers, booleans, dates
    ({"calibration__sources": Y("{2024: {kind: world, generator: web}}")}, "calibration.sources.2024", "YAML read this name as the number 2024; quote it: '2024':"),
    ({"calibration__sources": Y("{on: {kind: world, generator: web}}")}, "calibration.sources.True", "the boolean true (an unquoted yes, true or on); quote it, e.g. 'on':"),
    ({"models": Y("{yes: {kind: world}}")}, "models.True", "YAML read this name as the boolean true"),
    ({"calibration__builders": Y("{no: {kind: mix}}")}, "calibration.builders.False", "the boolean false (an unquoted no, false or off); quote it, e.g. 'off':"),
    ({"evaluation__dimensions": Y("{true: {tasks: [world_general]}}")}, "evaluation.dimensions.True", "quote it"),
    ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "metric": Y("{off: 'acc,none'}")}}}, "evaluation.dimensions.g.metric.False", "the boolean false"),
    ({"calibration__sources": Y("{~: {kind: world, generator: web}}")}, "calibration.sources.None", "YAML read this name as null"),
    ({"calibration__sources": Y("{1.5: {kind: world, generator: web}}")}, "calibration.sources.1.5", "the number 1.5; quote it: '1.5':"),
    ({"calibration__sources": Y("{2024-01-01: {kind: world, generator: web}}")}, "calibration.sources.2024-01-01", "the date 2024-01-01; quote it: '2024-01-01':"),
    ({"evaluation__dimensions": {"g": {"tasks": Y("[on]")}}}, "evaluation.dimensions.g.tasks[0]", "the boolean true (an unquoted yes, true or on); write it quoted, e.g. 'on'"),
    ({"models": {"m": HUB_MODEL | {"revision": Y("1234567")}}}, "models.m.revision", "the number 1234567; write it quoted as you meant it, e.g. '1234567'"),
    ({"calibration__sources": {"x": hub(revision=Y("2024-01-01"))}}, "calibration.sources.x.revision", "the date 2024-01-01; write it quoted, e.g. '2024-01-01'"),
    ({"calibration__sources": {"x": hub(split=Y("12:30"))}}, "calibration.sources.x.split", "YAML 1.1 also reads 12:30 as base 60"),
    ({"report__title": Y("yes")}, "report.title", "write it quoted, e.g. 'on'"),
    ({"pruning__structures": Y("[2:4]")}, "pruning.structures[0]", "an unquoted 2:4 as the base-60 number 124; write it quoted: '2:4'"),
    ({"pruning__structures": Y("[unstructured, 4:8]")}, "pruning.structures[1]", "write it quoted: '4:8'"),
    ({"device": Y("on")}, "device", "the boolean true (an unquoted yes, true or on); choose one of: cpu, cuda"),
    ({"calibration__bos": None}, "calibration.bos", "YAML read this value as null (an empty value, null or ~); choose one of: none, document, window"),
    # --- 3. values beyond what the model or the data can give
    ({"calibration__seqlen": 512}, "calibration.seqlen", "512 tokens exceed the 256 positions of model 'world' (world.model.max_position_embeddings); lower calibration.seqlen to at most 256"),
    ({"world__train": {"seqlen": 512}}, "world.train.seqlen", "512 tokens exceed world.model.max_position_embeddings = 256; lower it"),
    ({"world__model": {"hidden_size": 130}}, "world.model.hidden_size", "130 is not a multiple of world.model.num_heads = 4"),
    ({"world__model": {"hidden_size": 36, "num_heads": 4}}, "world.model.num_heads", "head dimension of 9, but rotary embeddings need an even one"),
    ({"world__model": {"hidden_size": 12, "num_heads": 4}}, "world.model.num_heads", "head dimension of 3"),
    ({"world__model": {"hidden_size": 8, "num_heads": 8}}, "world.model.num_heads", "head dimension of 1"),
    ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "num_fewshot": 200}}}, "evaluation.dimensions.g.num_fewshot",
     "200 shots cannot be drawn for world_general, which has world.eval_items = 200 items and draws each item's shots from the other 199; lower num_fewshot to at most 199"),
    ({"world__eval_items": 24, "evaluation__dimensions": {"g": {"tasks": ["world_math"], "num_fewshot": 30, "limit": 5}}},
     "evaluation.dimensions.g.num_fewshot", "at most 23 or raise world.eval_items"),
    ({"world__eval_items": 24, "evaluation__dimensions": {"g": {"tasks": ["world_general", "world_math"], "num_fewshot": 2, "task_num_fewshot": {"world_math": 30}}}},
     "evaluation.dimensions.g.task_num_fewshot.world_math", "30 shots cannot be drawn for world_math"),
    ({"calibration__sources": {"x": world(docs=40, sampling="documents")}}, "calibration.sources.x.docs", "40 documents cannot fill calibration.nsamples = 64 windows with sampling: documents"),
    ({"calibration__sampling": "documents", "calibration__sources": {"x": local(max_docs=10)}}, "calibration.sources.x.max_docs", "raise max_docs to at least 64 or use sampling: windows"),
    ({"pruning__structures": ["2:4"], "pruning__blocksize": 126}, "pruning.blocksize", "126 is not a multiple of 4, which structure '2:4' needs"),
    ({"pruning__structures": ["4:8"], "world__model": {"intermediate_size": 100}}, "world.model.intermediate_size", "world.model.intermediate_size = 100 is not a multiple of 8, which structure '4:8' needs"),
    ({"calibration__builders": {"s": {"kind": "sgs", "pool_size": 10}}}, "calibration.builders.s.pool_size", "SGS pool_size 10 is too small"),
    ({"calibration__builders": {"i": {"kind": "igsp", "pool_size": 10}}}, "calibration.builders.i.pool_size", "IGSP pool_size 10 is smaller than nsamples=64"),
    ({"calibration__builders": {"s": {"kind": "sgs", "prefix_tokens": 127}}}, "calibration.builders.s.prefix_tokens", "leaves no token to generate"),
    ({"pruning__profiles": ["owl"], "pruning__structures": ["2:4"]}, "pruning.profiles", "'owl' spreads unstructured targets"),
    ({"pruning__profiles": ["owl"], "pruning__sparsities": [0.9], "pruning__owl_lmbda": 0.2}, "pruning.owl_lmbda", "use less than 0.1"),
    ({"pruning__profiles": ["owl", "OWL"]}, "pruning.profiles[1]", "is not one of: uniform, owl"),
    ({"pruning__owl_m": 0}, "pruning.owl_m", "0 must be > 0"),
    ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "task_limits": {"world_math": 5}}}}, "evaluation.dimensions.g.task_limits.world_math", "'world_math' is not a task of this dimension. Its tasks: world_general"),
    ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "task_limits": {"world_general": 0}}}}, "evaluation.dimensions.g.task_limits.world_general", "0 must be >= 1"),
    ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "task_num_fewshot": {"world_math": 5}}}}, "evaluation.dimensions.g.task_num_fewshot.world_math", "'world_math' is not a task of this dimension. Its tasks: world_general"),
    ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "task_num_fewshot": {"world_general": -1}}}}, "evaluation.dimensions.g.task_num_fewshot.world_general", "-1 must be >= 0"),
    ({"pruning__compare": [{"calibrations": ["nope"]}]}, "pruning.compare[0].calibrations[0]", "'nope' is not a calibration source or builder"),
    ({"pruning__compare": [{}, {"seeds": [7]}]}, "pruning.compare[1].seeds[0]", "7 is not one of calibration.seeds [0]"),
    ({"pruning__compare": [{"profiles": ["owl"], "structures": ["2:4"]}]}, "pruning.compare[0].profiles", "pruning.compare[0].structures has no 'unstructured'"),
    ({"pruning__compare": [{"structures": ["2:4"]}], "pruning__blocksize": 126}, "pruning.blocksize", "126 is not a multiple of 4, which structure '2:4' needs"),
    ({"pruning__compare": [{"methods": ["obc"]}]}, "pruning.compare[0].methods[0]", "'obc' is not one of: sparsegpt, wanda, magnitude"),
    ({"pruning__compare": [{"seed": [0]}]}, "pruning.compare[0].seed", "unknown key (did you mean 'seeds'?)"),
    ({"pruning__compare": {"methods": ["wanda"]}}, "pruning.compare", "YAML read a mapping here; write a list"),
    # --- 4. keys the kind does not read
    *[
        ({"calibration__sources": {"x": world(**{key: value})}}, f"calibration.sources.x.{key}",
         f"a world source does not read '{key}'. Its keys: kind, generator, docs, sampling, bos")
        for key, value in [("path", "a.txt"), ("template", "{text}"), ("max_docs", 5), ("chat_field", "messages"), ("format", "jsonl"),
                           ("name", "en"), ("split", "train"), ("data_files", "a.json"), ("revision", "abc"), ("streaming", True)]
    ],
    ({"calibration__sources": {"x": local(generator="web")}}, "calibration.sources.x.generator", "a local source does not read 'generator'. Its keys: kind, path, format"),
    ({"calibration__sources": {"x": local(docs=5)}}, "calibration.sources.x.docs", "a local source does not read 'docs'"),
    ({"calibration__sources": {"x": local(revision="abc")}}, "calibration.sources.x.revision", "a local source does not read 'revision'"),
    ({"calibration__sources": {"x": local(streaming=True)}}, "calibration.sources.x.streaming", "a local source does not read 'streaming'"),
    ({"calibration__sources": {"x": local(split="train")}}, "calibration.sources.x.split", "a local source does not read 'split'"),
    ({"calibration__sources": {"x": hub(generator="web")}}, "calibration.sources.x.generator", "a hub source does not read 'generator'. Its keys: kind, path, name"),
    ({"calibration__sources": {"x": hub(docs=5)}}, "calibration.sources.x.docs", "a hub source does not read 'docs'"),
    ({"calibration__sources": {"x": hub(format="jsonl")}}, "calibration.sources.x.format", "a hub source does not read 'format'"),
    ({"models": {"m": {"kind": "world", "path": "x"}}}, "models.m.path", "a world model does not read 'path'. Its keys: kind, dtype"),
    ({"models": {"m": {"kind": "world", "revision": "abc"}}}, "models.m.revision", "a world model does not read 'revision'"),
    ({"models": {"m": {"kind": "local", "path": "llama", "revision": "abc"}}}, "models.m.revision", "a local model does not read 'revision'. Its keys: kind, path, dtype"),
    ({"calibration__sources": {"x": local(chat_field="messages", template="{text}")}}, "calibration.sources.x.template", "does not read 'template'; remove one of the two"),
    # --- 5. templates that do more than read fields
    ({"calibration__sources": {"x": local(template="{text.upper}")}}, "calibration.sources.x.template", "{text.upper} reads the attribute 'upper' of field 'text'"),
    ({"calibration__sources": {"x": local(template="{choices[text].count}")}}, "calibration.sources.x.template", "reads the attribute 'count'"),
    ({"calibration__sources": {"x": local(template="{text!r}")}}, "calibration.sources.x.template", "{text!r} converts the value with !r; write {text}"),
    ({"calibration__sources": {"x": local(template="{text:>10}")}}, "calibration.sources.x.template", "{text:>10} formats the value with ':>10'; write {text}"),
    ({"calibration__sources": {"x": local(template="{}")}}, "calibration.sources.x.template", "{} is a positional field"),
    ({"calibration__sources": {"x": hub(template="{0}")}}, "calibration.sources.x.template", "{0} is a positional field"),
    ({"calibration__sources": {"x": local(template="hello")}}, "calibration.sources.x.template", "reads no record field"),
    ({"calibration__sources": {"x": local(template="{text")}}, "calibration.sources.x.template", "not a str.format template"),
    ({"calibration__sources": {"x": {"kind": "local", "path": "notes.txt", "template": "{q}"}}}, "calibration.sources.x.template", "text files give each document one field, 'text'"),
    # --- 6. skip patterns that prune nothing
    ({"pruning__skip": ["*"]}, "pruning.skip", "skip all 28 linear layers of model 'world', so it would stay dense; skip fewer layers"),
    ({"pruning__skip": ["model.*"]}, "pruning.skip", "skip all 28 linear layers"),
    ({"pruning__skip": ["*_proj"]}, "pruning.skip", "skip all 28 linear layers"),
    ({"pruning__skip": ["model.layer.*"]}, "pruning.skip[0]", "'model.layer.*' matches no linear layer; names look like model.layers.0.self_attn.q_proj"),
    ({"pruning__skip": ["*.down_proj", "lm_head"]}, "pruning.skip[1]", "matches no linear layer (lm_head and the embeddings are never pruned)"),
    ({"models": {"m": {"kind": "local", "path": "llama"}}, "calibration__seqlen": 32, "pruning__skip": ["*"]}, "pruning.skip", "skip all 14 linear layers of model 'm'"),
    ({"models": {"m": {"kind": "local", "path": "llama"}}, "calibration__seqlen": 128}, "calibration.seqlen", "(max_position_embeddings in llama/config.json)"),
    ({"models": {"m": {"kind": "local", "path": "llama"}}, "calibration__seqlen": 32, "pruning__structures": ["4:8"]}, "models.m.path", "intermediate_size in llama/config.json = 100 is not a multiple of 8"),
    # --- 7. messages that were raw (oneOf, pattern)
    ({"calibration__builders": {"m": {"kind": "mix", "sources": {"web": -1}}}}, "calibration.builders.m.sources.web", "weight -1 must be > 0"),
    ({"calibration__builders": {"m": {"kind": "mix", "sources": {"web": 0}}}}, "calibration.builders.m.sources.web", "weight 0 must be > 0"),
    ({"calibration__builders": {"m": {"kind": "mix", "sources": {"web": "high"}}}}, "calibration.builders.m.sources.web", "the text 'high' is not a number; write a number"),
    ({"calibration__builders": {"m": {"kind": "mix", "sources": {"web": True}}}}, "calibration.builders.m.sources.web", "boolean true"),
    ({"calibration__builders": {"m": {"kind": "mix", "sources": ["web", "web"]}}}, "calibration.builders.m.sources", "'web' is listed twice"),
    ({"calibration__builders": {"m": {"kind": "mix", "sources": []}}}, "calibration.builders.m.sources", "should be non-empty"),
    ({"calibration__builders": {"m": {"kind": "mix", "sources": {}}}}, "calibration.builders.m.sources", "is empty; define at least 1 entry"),
    ({"calibration__builders": {"m": {"kind": "mix", "sources": "web"}}}, "calibration.builders.m.sources", "write a list or a mapping"),
    ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "metric": {"world_general": "acc_norm"}}}},
     "evaluation.dimensions.g.metric.world_general", "'acc_norm' should be 'metric,filter', e.g. 'acc_norm,none'"),
    ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "metric": {"world_general": "acc,none,x"}}}},
     "evaluation.dimensions.g.metric.world_general", "should be 'metric,filter'"),
]


@pytest.mark.parametrize("edits, key, words", BAD, ids=[f"{i}-{case[1]}" for i, case in enumerate(BAD)])
def test_bad_config_names_the_key_and_what_to_do(edits, key, words, workdir):
    with pytest.raises(ConfigError) as err:
        validate_config(_config(**edits), workdir=workdir)
    message = str(err.value)
    assert message.startswith(f"config key '{key}': "), message
    assert words in message, message
    assert "\n" not in message
    assert "is not valid under any of the given schemas" not in message and "does not match '^" not in message


def test_there_are_many_distinct_bad_inputs():
    assert len({repr(edits) for edits, _, _ in BAD}) >= 45


def test_a_config_that_is_not_a_mapping():
    with pytest.raises(ConfigError, match=r"^config key '<top level>': the config is a list, not a mapping"):
        validate_config(["models"])


def test_yaml_reads_the_coerced_inputs_as_the_tests_assume():
    """The YAML 1.1 readings behind the messages (PyYAML's safe_load; Snakemake reads YAML alike)."""
    assert Y("{2024: a, on: b, no: c, yes: d, true: e, 1.5: f, ~: g}") == {2024: "a", True: "e", False: "c", 1.5: "f", None: "g"}
    assert Y("[2:4, 4:8, '2:4']") == [124, 248, "2:4"]
    assert Y("a: 1e-3")["a"] == "1e-3" and Y("a: 1.0e-3")["a"] == 0.001 and Y("a: 8.0")["a"] == 8.0
    assert Y("a: 1234567")["a"] == 1234567 and str(Y("a: 2024-01-01")["a"]) == "2024-01-01" and Y("a: 12:30")["a"] == 750


# ------------------------------------------------------------------------------------------------
# Values that sit just inside what the model and data give are accepted
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edits",
    [
        {"calibration__seqlen": 256},
        {"world__train": {"seqlen": 256}},
        {"world__eval_items": 24, "evaluation__dimensions": {"g": {"tasks": ["world_general"], "num_fewshot": 23, "limit": 5}}},
        {"world__eval_items": 24, "evaluation__dimensions": {"g": {"tasks": ["world_general", "world_math"], "num_fewshot": 30, "task_num_fewshot": {"world_general": 23, "world_math": 0}}}},
        {"world__eval_items": 2, "evaluation__dimensions": {"p": {"tasks": ["world_perplexity"], "num_fewshot": 5}}},  # takes no shots
        {"calibration__sources": {"x": world(docs=64, sampling="documents")}},
        {"pruning__structures": ["2:4", "4:8"], "pruning__blocksize": 64},
        {"pruning__skip": ["*.mlp.*", "model.layers.0.*"]},
        {"models": {"world": {"kind": "world"}, "big": HUB_MODEL}, "pruning__skip": ["*.mlp.gate_proj", "model.decoder.*"]},  # may match the hub model
        {"models": {"m": {"kind": "local", "path": "opt"}}, "calibration__seqlen": 4096, "pruning__skip": ["*"]},  # unknown names, positions
        {"calibration__sources": {"x": local(template="{q}\n{text[0]} {{literal}}")}},
        {"calibration__sources": {"x": local(chat_field="messages")}},
        {"calibration__builders": {"m": {"kind": "mix", "sources": {"web": 2, "code": 0.5}}}, "calibration__sources": {"web": world(), "code": world(generator="code")}},
        {"world__model": {"hidden_size": 40, "num_heads": 5}},  # head_dim 8
    ],
)
def test_values_at_the_limits_are_accepted(edits, workdir):
    validate_config(_config(**edits), workdir=workdir)


def test_world_model_check_agrees_with_building_the_model():
    """The head check accepts exactly the shapes a LlamaForCausalLM builds and runs (as calmix.world.training builds it)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    for hidden, heads in [(32, 2), (30, 4), (36, 4), (18, 2), (12, 4), (8, 8), (10, 5), (24, 4), (40, 5), (16, 8)]:
        try:
            validate_config(_config(world__model={"hidden_size": hidden, "num_heads": heads, "max_position_embeddings": 128}))
            accepted = True
        except ConfigError:
            accepted = False
        try:
            cfg = transformers.LlamaConfig(
                vocab_size=300, hidden_size=hidden, intermediate_size=16, num_hidden_layers=1, num_attention_heads=heads,
                num_key_value_heads=heads, max_position_embeddings=16, tie_word_embeddings=True,
            )
            model = transformers.LlamaForCausalLM(cfg)
            out = model(torch.zeros(1, 6, dtype=torch.long)).logits
            # head_dim 1 runs, but its rotary cos/sin have 2 dimensions and broadcast q and k to 2 (not the model asked for)
            cos, _ = model.model.rotary_emb(torch.zeros(1, 6, hidden), torch.arange(6)[None])
            builds = out.shape == (1, 6, 300) and cos.shape[-1] == hidden // heads
        except Exception:
            builds = False
        assert accepted == builds, (hidden, heads, accepted, builds)


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"])
def test_linear_names_are_the_real_models(arch):
    """pruning.skip is checked against names built by hand; they must be a real model's decoder linears."""
    transformers = pytest.importorskip("transformers")
    from torch import nn

    config_class = getattr(transformers, arch.replace("ForCausalLM", "Config"))
    cfg = config_class(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                       num_key_value_heads=1)
    model = getattr(transformers, arch)(cfg)
    real = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert real == llama_linear_names(3) + ["lm_head"]
    assert cfg.model_type in LLAMA_LIKE


def test_the_kind_table_and_the_schema_agree():
    """KEYS_BY_KIND is the one table: the schema lists exactly its keys, and corpora reads no other."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    sources = schema["properties"]["calibration"]["properties"]["sources"]["additionalProperties"]["properties"]
    models = schema["properties"]["models"]["additionalProperties"]["properties"]
    assert set(sources) == {k for keys in KEYS_BY_KIND["source"].values() for k in keys}
    assert set(models) == {k for keys in KEYS_BY_KIND["model"].values() for k in keys}
    corpora = (REPO / "calmix" / "calibration" / "corpora.py").read_text()
    read = set(re.findall(r"spec(?:\.get\(|\[)\"(\w+)\"", corpora))
    assert read and read <= {k for keys in KEYS_BY_KIND["source"].values() for k in keys}


def test_the_registries_and_the_schema_agree():
    """The pruning registry and the builder kinds are the one list of methods, profiles and kinds, with
    their knobs: the schema offers exactly those names, and every knob a record reads is a schema key."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]
    pruning = schema["pruning"]["properties"]
    assert pruning["methods"]["items"]["enum"] == list(registry.METHODS)
    assert pruning["profiles"]["items"]["enum"] == list(registry.PROFILES)
    compare = pruning["compare"]["items"]["properties"]
    for key in plan.GRID_KEYS:  # the compare grid offers what the main block offers
        assert compare[key]["items"] == pruning[key]["items"]
    knobs = registry.SHARED_KNOBS + registry.DATA_KNOBS
    knobs += tuple(k for r in [*registry.METHODS.values(), *registry.PROFILES.values()] for k in r.knobs)
    assert {k.key for k in knobs} <= set(pruning)
    builder = schema["calibration"]["properties"]["builders"]["additionalProperties"]
    assert set(builder["properties"]["kind"]["enum"]) == set(builders.KINDS)
    assert set().union(*(k.knobs for k in builders.KINDS.values())) <= set(builder["properties"])


def _schema_nodes(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _schema_nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schema_nodes(value)


def test_every_schema_pattern_is_described_in_words():
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    patterns = {n["pattern"] for n in _schema_nodes(schema) if isinstance(n.get("pattern"), str)}
    assert patterns and patterns <= set(PATTERN_WORDS)
    combinators = [n for n in _schema_nodes(schema) if "oneOf" in n or "anyOf" in n]
    assert all(all("type" in b for b in n.get("oneOf", n.get("anyOf"))) for n in combinators)  # branches chosen by type


def test_templates_share_one_rule_with_the_corpus(tmp_path):
    """The corpus refuses what the config check refuses: {text.upper} would put a memory address in a document."""
    from calmix.calibration.corpora import CorpusError, load_documents

    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "a"}) + "\n")
    for template in ["{text.upper}", "{text!r}", "{text:>10}", "{}", "{0}"]:
        with pytest.raises(CorpusError, match=r"source 'x': template "):
            load_documents("x", {"kind": "local", "path": str(path), "template": template})
    docs, _ = load_documents("x", {"kind": "local", "path": str(path), "template": "<{text}>"})
    assert docs[0]["text"] == "<a>"


def test_config_check_imports_neither_torch_nor_transformers():
    code = (
        "import sys, yaml; from calmix.config import read_config_file, validate_config; "
        "c = read_config_file('experiments/world-tiny.yaml'); "
        "c['calibration']['builders'] = {'m': {'kind': 'mix'}, 's': {'kind': 'sgs'}, 'i': {'kind': 'igsp'}, 'c': {'kind': 'selfcal'}}; "
        "c['pruning']['profiles'] = ['uniform', 'owl']; "
        "c['pruning']['skip'] = ['*.down_proj']; validate_config(c); "
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'lm_eval') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------
# Code execution opt-in
# ------------------------------------------------------------------------------------------------


def test_code_executing_tasks_need_the_opt_in():
    dims = {"code": {"tasks": ["world_code", "humaneval"]}}
    with pytest.raises(ConfigError) as err:
        validate_config(_config(evaluation__dimensions=dims))
    assert "config key 'evaluation.dimensions.code.tasks[1]'" in str(err.value)
    assert "executes the code the model writes" in str(err.value) and "allow_code_execution: true" in str(err.value)
    config = validate_config(_config(evaluation__dimensions=dims, evaluation__allow_code_execution=True))
    assert config["evaluation"]["allow_code_execution"] is True


def test_dimension_settings_default_to_each_tasks_own_shots_the_global_limit_and_primary_metrics():
    config = validate_config(_config())
    assert config["evaluation"]["dimensions"]["general"] == {"tasks": ["world_general"], "metric": {}}
    dims = {
        "commonsense": {"tasks": ["world_commonsense"], "num_fewshot": 5, "limit": 50, "metric": {"world_commonsense": "acc_norm,none"}},
        "math": {"tasks": ["world_math"], "limit": None},
        "perplexity": {"tasks": ["world_perplexity"]},
    }
    config = validate_config(_config(evaluation__dimensions=dims, evaluation__limit=20))
    assert config["evaluation"]["dimensions"]["commonsense"]["limit"] == 50
    assert config["evaluation"]["dimensions"]["math"]["limit"] is None


def test_world_code_exec_needs_the_opt_in_by_its_yaml():
    """world_code_exec is no lm-eval code family by name: its YAML's unsafe_code: true is what counts."""
    from calmix.evaluation.tasks import CODE_EXECUTING_TASKS

    assert not "world_code_exec".startswith(CODE_EXECUTING_TASKS)
    dims = {"code": {"tasks": ["world_code_exec"]}}
    with pytest.raises(ConfigError) as err:
        validate_config(_config(evaluation__dimensions=dims))
    message = str(err.value)
    assert "config key 'evaluation.dimensions.code.tasks[0]'" in message and "'world_code_exec'" in message
    assert "evaluation.allow_code_execution: true" in message
    validate_config(_config(evaluation__dimensions=dims, evaluation__allow_code_execution=True))


def test_unsafe_code_is_read_from_task_yamls_and_their_includes(tmp_path):
    from calmix.evaluation.tasks import executes_code

    (tmp_path / "base.yaml").write_text("unsafe_code: true\nprocess_results: !function nowhere.at_all\n")
    (tmp_path / "child.yaml").write_text("include: base.yaml\ntask: child\n")
    (tmp_path / "safe.yaml").write_text("task: safe\nprocess_results: !function nowhere.at_all\n")
    assert executes_code("child", tmp_path) and executes_code("base", tmp_path)
    assert not executes_code("safe", tmp_path) and not executes_code("missing", tmp_path)
    assert executes_code("humaneval", tmp_path)  # lm-eval's own, by name
    assert not any(executes_code(t) for t in ("world_general", "world_commonsense", "world_code", "world_math", "world_perplexity"))


def test_code_executing_task_list_covers_lm_eval():
    # Every task lm-eval marks unsafe_code (and every task including such a config) is caught.
    import lm_eval

    from calmix.evaluation.tasks import executes_code

    root = Path(lm_eval.__file__).parent / "tasks"
    unsafe = {p for p in root.rglob("*.yaml") if "unsafe_code: true" in p.read_text(errors="ignore")}
    names = set()
    for path in root.rglob("*.yaml"):
        text = path.read_text(errors="ignore")
        includes = re.findall(r"^include:\s*(\S+)", text, flags=re.M)
        if path in unsafe or any((path.parent / inc).resolve() in {u.resolve() for u in unsafe} for inc in includes):
            names.update(n for n in re.findall(r"^task:\s*(\S+)", text, flags=re.M) if n != "null")
    assert names and all(executes_code(n) for n in names), sorted(n for n in names if not executes_code(n))


# ------------------------------------------------------------------------------------------------
# Config files
# ------------------------------------------------------------------------------------------------


BAD_FILES = [
    ("calibration:\n  nsamples: 8\n  seqlen: 32\n  nsamples: 16\n", "line 4: key 'nsamples' appears twice (first on line 2; the second would silently replace the first); keep one"),
    ("models: {}\nmodels: {}\n", "line 2: key 'models' appears twice"),
    ("sources:\n  web: {kind: world, generator: web, kind: local}\n", "line 2: key 'kind' appears twice"),
    ("pruning:\n  true_sequential: yes\n  true_sequential: no\n", "line 3: key 'true_sequential' appears twice"),
    ("builders:\n  on: {kind: mix}\n  yes: {kind: mix}\n", "line 3: key 'yes' appears twice (first on line 2 as 'on', which YAML reads alike;"),
    ("calibration:\n  nsamples: 8\n   seqlen: 32\n", "line 3, column 10: not valid YAML: mapping values are not allowed here"),
    ("models:\n\tworld: {kind: world}\n", "line 2, column 1: not valid YAML: found character '\\t' that cannot start any token (indent with spaces, not tabs)"),
    ("models: {world: {kind: world}\n", "not valid YAML"),
    ("title: 'unclosed\n", "not valid YAML"),
    ("", "is empty; write the config as 'key: value' lines"),
    ("# only a comment\n", "is empty"),
    ("- models\n- calibration\n", ": the top level is a list, not a mapping"),
    ("just text\n", ": the top level is the text 'just text', not a mapping"),
]


@pytest.mark.parametrize("text, words", BAD_FILES)
def test_bad_config_file_names_the_file_and_line(tmp_path, text, words):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_config_file(path)
    message = str(err.value)
    assert message.startswith(f"config file {path}"), message
    assert words in message, message
    assert "\n" not in message


def test_missing_or_unreadable_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^config file experiments/nope.yaml not found; check the path"):
        read_config_file("experiments/nope.yaml")
    with pytest.raises(ConfigError, match=r"is a directory"):
        read_config_file(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes("title: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 text"):
        read_config_file(tmp_path / "latin1.yaml")


def test_config_file_reads_what_yaml_reads(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("base: &b {kind: world, generator: web}\nsources:\n  web: {<<: *b, generator: code}\nlist: [1, 2]\n")
    assert read_config_file(path) == {
        "base": {"kind": "world", "generator": "web"},
        "sources": {"web": {"kind": "world", "generator": "code"}},  # a merge key may be overridden
        "list": [1, 2],
    }
    assert read_config_file(REPO / "config.yaml") == yaml.safe_load((REPO / "config.yaml").read_text())


MERGES = [
    ({"a": 1, "b": {"c": 1, "d": [1, 2]}}, {"b": {"d": [3]}, "e": 2}),
    ({"a": {"b": {"c": 1}}}, {"a": {"b": {"d": 2}, "e": 3}}),
    ({"a": {"b": 1}}, {"a": 5}),  # a value replaces a mapping
    ({"a": 5}, {"a": {"b": 1}}),  # a mapping replaces a value
    ({"a": {"b": 1}}, {"a": {}}),  # an empty mapping changes nothing
    ({"a": 5}, {"a": {}}),
    ({"a": [1, 2]}, {"a": [3]}),  # lists are replaced whole
    ({"a": None}, {"a": {"b": None}}),
    ({}, {"models": {"w": {"kind": "world"}}}),
]


@pytest.mark.parametrize("first, second", MERGES)
def test_several_files_merge_as_snakemake_merges_them(tmp_path, first, second):
    from snakemake.utils import update_config

    first = first or {"other": 0}  # an empty file is an error of its own
    (tmp_path / "1.yaml").write_text(yaml.safe_dump(first))
    (tmp_path / "2.yaml").write_text(yaml.safe_dump(second))
    want = copy.deepcopy(first)
    update_config(want, copy.deepcopy(second))
    assert read_config_files([tmp_path / "1.yaml", tmp_path / "2.yaml"]) == want


def test_several_files_in_order_the_later_wins(tmp_path):
    (tmp_path / "a.yaml").write_text((REPO / "experiments" / "world-tiny.yaml").read_text())
    (tmp_path / "b.yaml").write_text("calibration:\n  nsamples: 4\nworld:\n  model: {num_layers: 1}\n")
    merged = read_config_files([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    assert merged["calibration"]["nsamples"] == 4 and merged["calibration"]["seqlen"] == 32
    assert merged["world"]["model"] == {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2,
                                        "max_position_embeddings": 64}
    validate_config(merged)
    with pytest.raises(ConfigError, match=r"^config file .*missing.yaml not found"):
        read_config_files([tmp_path / "a.yaml", tmp_path / "missing.yaml"])
