"""Config validation: one JSON Schema with the defaults, plus the checks a schema cannot express.

A bad config must fail before any job runs, with a message that names the key and what to do, so
every error here is a ConfigError of the form "config key 'a.b[0]': what is wrong. Fix: ...".
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import validators

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "resources" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config that cannot run; the message names the key."""


def _with_defaults(cls: type) -> type:
    """A validator class that fills each object's missing keys from the schema's defaults."""
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def key_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    where = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return f"config key '{key_path(where + [extra[0]])}': unknown key. Allowed here: {', '.join(allowed)}"
    if error.validator == "not" and error.instance == "none":
        return f"config key '{key_path(where + ['none'])}': the name 'none' is reserved for data-free pruning; rename the source"
    if error.validator == "pattern" and where and where[-1] in ("sources", "models", "dimensions"):
        return f"config key '{key_path(where + [error.instance])}': names may hold only letters, digits, '_', '.', '-' (they become file names)"
    if error.validator == "required":
        missing = error.message.split("'")[1]
        return f"config key '{key_path(where + [missing])}': required but missing"
    return f"config key '{key_path(where)}': {error.message}"


def validate_config(config: dict[str, Any], schema_path: Path = SCHEMA_PATH, workdir: Path | None = None) -> dict:
    """Validate in place (filling defaults) and return the config; raise ConfigError naming the key."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(_Validator(schema).iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        # Report the deepest error along the first failing path: it names the most specific key.
        first = errors[0]
        same_branch = [e for e in errors if list(e.absolute_path)[: len(first.absolute_path)] == list(first.absolute_path)]
        raise ConfigError(_describe(max(same_branch, key=lambda e: len(e.absolute_path))))
    _check_semantics(config, Path(workdir or Path.cwd()))
    return config


def builder_knobs(kind: str) -> set[str]:
    """The config keys a calibration builder of this kind reads (besides 'kind')."""
    from calmix.selfgen import GENERATION_KNOBS, SELECTION_KNOBS

    if kind == "mix":
        return {"sources"}
    extra = {"batch_size"} | ({"prefix_source"} if kind == "sgs" else set())
    return set(GENERATION_KNOBS[kind]) | set(SELECTION_KNOBS[kind]) | extra


def _check_semantics(config: dict, workdir: Path) -> None:
    from calmix.corpora import local_files, template_fields
    from calmix.evaluation import executes_code
    from calmix.metrics import METRICS
    from calmix.world import WORLD_GENERATORS

    for key, spec in config["calibration"]["sources"].items():
        where = f"calibration.sources.{key}"
        if spec["kind"] == "world" and spec["generator"] not in WORLD_GENERATORS:
            raise ConfigError(
                f"config key '{where}.generator': unknown world generator {spec['generator']!r}. "
                f"Choose one of: {', '.join(WORLD_GENERATORS)}"
            )
        if spec["kind"] == "local" and not local_files(str(workdir / spec["path"])):
            raise ConfigError(
                f"config key '{where}.path': no file matches {spec['path']!r} "
                f"(relative paths are resolved against {workdir}). Fix the path or remove the source"
            )
        if spec["kind"] == "hub" and "revision" not in spec and not (workdir / spec["path"]).is_dir():
            raise ConfigError(
                f"config key '{where}.revision': required for hub dataset {spec['path']!r}: pin the commit sha "
                "(the dataset page's 'History' lists them) so every rerun reads the same records"
            )
        try:
            template_fields(spec.get("template", "{text}"))
        except ValueError as e:
            raise ConfigError(f"config key '{where}.template': not a valid str.format template: {e}") from None
    sources = list(config["calibration"]["sources"])
    for key, spec in config["calibration"]["builders"].items():
        where = f"calibration.builders.{key}"
        if key in sources:
            raise ConfigError(f"config key '{where}': {key!r} is also a source; a builder needs a name of its own")
        allowed = builder_knobs(spec["kind"])
        stray = [k for k in spec if k != "kind" and k not in allowed]
        if stray:
            raise ConfigError(
                f"config key '{where}.{stray[0]}': a {spec['kind']} builder does not read {stray[0]!r}. "
                f"Its knobs: {', '.join(sorted(allowed))}"
            )
        if spec.get("prefix_source") is not None and spec["prefix_source"] not in sources:
            raise ConfigError(
                f"config key '{where}.prefix_source': {spec['prefix_source']!r} is not a calibration source. "
                f"Choose from: {', '.join(sources)}"
            )
        if spec["kind"] == "mix":
            named = spec.get("sources") or []
            unknown = [s for s in named if s not in sources]
            if unknown:
                raise ConfigError(
                    f"config key '{where}.sources': {unknown} are not calibration sources. "
                    f"Choose from: {', '.join(sources)}"
                )
    baseline = config["report"]["baseline"]
    if baseline is not None and baseline not in sources:
        raise ConfigError(f"config key 'report.baseline': {baseline!r} is not a calibration source. "
                          f"Choose from: {', '.join(sources)}")
    for key, spec in config["models"].items():
        if spec["kind"] == "local" and not (workdir / spec["path"] / "config.json").is_file():
            raise ConfigError(
                f"config key 'models.{key}.path': {spec['path']!r} is not a save_pretrained folder "
                "(no config.json found there)"
            )
    for i, name in enumerate(config["metrics"]):
        if name not in METRICS:
            raise ConfigError(f"config key 'metrics[{i}]': unknown metric {name!r}. Choose from: {', '.join(METRICS)}")
    world_tasks = {p.stem for p in (SCHEMA_PATH.parent / "lm_eval_tasks").glob("*.yaml")}
    for dim, spec in config["evaluation"]["dimensions"].items():
        for i, task in enumerate(spec["tasks"]):
            if executes_code(task) and not config["evaluation"]["allow_code_execution"]:
                raise ConfigError(
                    f"config key 'evaluation.dimensions.{dim}.tasks[{i}]': lm-eval task {task!r} executes the code "
                    "the model writes. Set evaluation.allow_code_execution: true to run it (on a machine where "
                    "running untrusted code is acceptable), or remove the task"
                )
            if task.startswith("world_") and task not in world_tasks:
                raise ConfigError(
                    f"config key 'evaluation.dimensions.{dim}.tasks[{i}]': unknown world task {task!r}. "
                    f"Known: {', '.join(sorted(world_tasks))}"
                )
        for task in spec["metric"]:
            if task not in spec["tasks"]:
                raise ConfigError(
                    f"config key 'evaluation.dimensions.{dim}.metric.{task}': {task!r} is not a task of this "
                    f"dimension. Its tasks: {', '.join(spec['tasks'])}"
                )
