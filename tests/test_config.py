"""Config validation: defaults filled from the schema, and each bad config names its key."""

import copy

import pytest
import yaml

from calmix.config import ConfigError, validate_config

BASE = {
    "models": {"world": {"kind": "world"}},
    "calibration": {"sources": {"web": {"kind": "world", "generator": "web"}}},
    "evaluation": {"dimensions": {"general": {"tasks": ["world_general"]}}},
}


def _config(**edits):
    config = copy.deepcopy(BASE)
    for path, value in edits.items():
        *parents, last = path.split("__")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return config


def test_defaults_come_from_the_schema():
    config = validate_config(_config())
    assert config["pruning"]["methods"] == ["sparsegpt"] and config["pruning"]["sparsities"] == [0.6]
    assert config["pruning"]["structures"] == ["unstructured"] and config["pruning"]["percdamp"] == 0.01
    assert config["device"] == "cpu"
    assert config["calibration"]["nsamples"] == 64 and config["calibration"]["seeds"] == [0]
    assert config["calibration"]["sampling"] == "windows" and config["calibration"]["bos"] == "none"
    assert config["calibration"]["sources"]["web"] == {"kind": "world", "generator": "web"}  # no other kind's keys
    assert config["world"]["model"]["hidden_size"] == 128


def test_shipped_config_is_valid():
    validate_config(yaml.safe_load(open("config.yaml")))


@pytest.mark.parametrize(
    "edits, key, words",
    [
        ({"pruning__bogus": 1}, "pruning.bogus", "unknown key"),
        ({"calibration__nsamples": "many"}, "calibration.nsamples", "is not of type 'integer'"),
        ({"pruning__sparsities": [1.5]}, "pruning.sparsities[0]", "maximum"),
        ({"pruning__sparsities": [0.0]}, "pruning.sparsities[0]", "minimum"),
        ({"calibration__sources": {"x": {"kind": "hubb"}}}, "calibration.sources.x.kind", "is not one of"),
        ({"calibration__sources": {"x": {"kind": "local", "path": "no/such/file.txt"}}}, "calibration.sources.x.path", "no file matches"),
        ({"evaluation__dimensions": {"math": {"tasks": []}}}, "evaluation.dimensions.math.tasks", "should be non-empty"),
        ({"calibration__sources": {"x": {"kind": "world", "generator": "nope"}}}, "calibration.sources.x.generator", "unknown world generator"),
        ({"metrics": ["perplexity", "nope"]}, "metrics[1]", "unknown metric"),
        ({"pruning__methods": ["obc"]}, "pruning.methods[0]", "is not one of"),
        ({"pruning__structures": ["3:4"]}, "pruning.structures[0]", "is not one of"),
        ({"calibration__sources": {"none": {"kind": "world", "generator": "web"}}}, "calibration.sources.none", "reserved"),
        ({"calibration__sources": {"a b": {"kind": "world", "generator": "web"}}}, "calibration.sources.a b", "file names"),
        ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "num_fewshot": -1}}}, "evaluation.dimensions.g.num_fewshot", "minimum"),
        ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "limit": 0}}}, "evaluation.dimensions.g.limit", "minimum"),
        ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "shots": 5}}}, "evaluation.dimensions.g.shots", "unknown key"),
        ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "metric": {"world_general": "acc_norm"}}}},
         "evaluation.dimensions.g.metric.world_general", "does not match"),
        ({"evaluation__dimensions": {"g": {"tasks": ["world_general"], "metric": {"world_code": "acc,none"}}}},
         "evaluation.dimensions.g.metric.world_code", "not a task of this dimension"),
        ({"calibration__builders": {"web": {"kind": "mix"}}}, "calibration.builders.web", "also a source"),
        ({"calibration__builders": {"m": {"kind": "mix", "sources": ["web", "poetry"]}}},
         "calibration.builders.m.sources", "not calibration sources"),
        ({"calibration__builders": {"m": {"kind": "mix", "sources": {"web": 0}}}}, "calibration.builders.m.sources", ""),
        ({"calibration__builders": {"m": {"kind": "blend"}}}, "calibration.builders.m.kind", "is not one of"),
        ({"calibration__builders": {"m": {"kind": "mix", "top_k": 5}}}, "calibration.builders.m.top_k", "does not read 'top_k'"),
        ({"calibration__builders": {"s": {"kind": "selfcal", "filter_quantile": 0.1}}},
         "calibration.builders.s.filter_quantile", "does not read"),
        ({"calibration__builders": {"s": {"kind": "sgs", "prefix_source": "poetry"}}},
         "calibration.builders.s.prefix_source", "not a calibration source"),
        ({"calibration__builders": {"i": {"kind": "igsp", "repetition_threshold": 2}}},
         "calibration.builders.i.repetition_threshold", "maximum"),
        ({"report__baseline": "poetry"}, "report.baseline", "not a calibration source"),
    ],
)
def test_bad_config_names_the_key(edits, key, words):
    with pytest.raises(ConfigError) as err:
        validate_config(_config(**edits))
    assert f"config key '{key}'" in str(err.value)
    assert words in str(err.value)


def test_code_executing_tasks_need_the_opt_in():
    dims = {"code": {"tasks": ["world_code", "humaneval"]}}
    with pytest.raises(ConfigError) as err:
        validate_config(_config(evaluation__dimensions=dims))
    assert "config key 'evaluation.dimensions.code.tasks[1]'" in str(err.value)
    assert "executes the code the model writes" in str(err.value) and "allow_code_execution: true" in str(err.value)
    config = validate_config(_config(evaluation__dimensions=dims, evaluation__allow_code_execution=True))
    assert config["evaluation"]["allow_code_execution"] is True


def test_dimension_settings_default_to_zero_shots_the_global_limit_and_primary_metrics():
    config = validate_config(_config())
    assert config["evaluation"]["dimensions"]["general"] == {"tasks": ["world_general"], "num_fewshot": 0, "metric": {}}
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
    from calmix.evaluation import CODE_EXECUTING_TASKS

    assert not "world_code_exec".startswith(CODE_EXECUTING_TASKS)
    dims = {"code": {"tasks": ["world_code_exec"]}}
    with pytest.raises(ConfigError) as err:
        validate_config(_config(evaluation__dimensions=dims))
    message = str(err.value)
    assert "config key 'evaluation.dimensions.code.tasks[0]'" in message and "'world_code_exec'" in message
    assert "evaluation.allow_code_execution: true" in message
    validate_config(_config(evaluation__dimensions=dims, evaluation__allow_code_execution=True))


def test_unsafe_code_is_read_from_task_yamls_and_their_includes(tmp_path):
    from calmix.evaluation import executes_code

    (tmp_path / "base.yaml").write_text("unsafe_code: true\nprocess_results: !function nowhere.at_all\n")
    (tmp_path / "child.yaml").write_text("include: base.yaml\ntask: child\n")
    (tmp_path / "safe.yaml").write_text("task: safe\nprocess_results: !function nowhere.at_all\n")
    assert executes_code("child", tmp_path) and executes_code("base", tmp_path)
    assert not executes_code("safe", tmp_path) and not executes_code("missing", tmp_path)
    assert executes_code("humaneval", tmp_path)  # lm-eval's own, by name
    assert not any(executes_code(t) for t in ("world_general", "world_commonsense", "world_code", "world_math", "world_perplexity"))


def test_code_executing_task_list_covers_lm_eval():
    # Every task lm-eval marks unsafe_code (and every task including such a config) is caught.
    import re
    from pathlib import Path

    import lm_eval

    from calmix.evaluation import executes_code

    root = Path(lm_eval.__file__).parent / "tasks"
    unsafe = {p for p in root.rglob("*.yaml") if "unsafe_code: true" in p.read_text(errors="ignore")}
    names = set()
    for path in root.rglob("*.yaml"):
        text = path.read_text(errors="ignore")
        includes = re.findall(r"^include:\s*(\S+)", text, flags=re.M)
        if path in unsafe or any((path.parent / inc).resolve() in {u.resolve() for u in unsafe} for inc in includes):
            names.update(n for n in re.findall(r"^task:\s*(\S+)", text, flags=re.M) if n != "null")
    assert names and all(executes_code(n) for n in names), sorted(n for n in names if not executes_code(n))
