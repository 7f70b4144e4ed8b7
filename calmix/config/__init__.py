"""Config validation: one JSON Schema with the defaults, plus the checks a schema cannot express.

A bad config must fail before any job runs, with a message that names the key and what to do, so
every error here is a one-line ConfigError of the form "config key 'a.b[0]': what is wrong. What to do"
(or "config file x.yaml, line N: ..." for a file that cannot be read). The order of the checks:

1. the config files, read by :func:`read_config_file` (duplicate keys, YAML syntax, the top level);
2. every mapping key is a string (YAML reads unquoted ``2024:`` or ``on:`` as a number or a boolean);
3. the JSON Schema (types, ranges, choices, defaults), each kind of error described by one helper;
4. :func:`_check_semantics`: what depends on other keys, on the files, or on the models.

Nothing here imports torch or transformers: the Snakefile validates while it parses the workflow.
"""

from __future__ import annotations

import collections.abc
import copy
import datetime
import difflib
import functools
import json
import math
import re
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from snakemake.utils import update_config
from jsonschema import validators

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "resources" / "config.schema.yaml"
TASK_DIR = SCHEMA_PATH.parent / "lm_eval_tasks"

#: The keys each kind of source and model reads, and so the only ones it may set (the schema lists
#: the union). Sources: calmix.calibration.corpora reads the kind's own keys, the shard rule 'sampling' and 'bos'.
#: Models: the rules read 'dtype' of every kind; 'path' is a folder (local) or a repository (hub).
KEYS_BY_KIND = {
    "source": {
        "world": ("kind", "generator", "docs", "sampling", "bos"),
        "local": ("kind", "path", "format", "max_docs", "template", "chat_field", "sampling", "bos"),
        "hub": ("kind", "path", "name", "split", "data_files", "revision", "streaming", "max_docs", "template",
                "chat_field", "sampling", "bos"),
    },
    "model": {
        "world": ("kind", "dtype"),
        "local": ("kind", "path", "dtype"),
        "hub": ("kind", "path", "revision", "dtype"),
    },
}

#: Local and hub models whose linear layers calmix can name from config.json (LLaMA's module names).
LLAMA_LIKE = ("llama", "mistral", "qwen2")

#: What each pattern of the schema asks for, in words (a regex means nothing to most users).
PATTERN_WORDS = {
    "^[A-Za-z0-9][A-Za-z0-9_.-]*$":
        "a name may hold only letters, digits, '_', '.' and '-', starting with a letter or digit (it becomes part of "
        "file names); rename it",
    "^[A-Za-z0-9][A-Za-z0-9_-]*$":
        "a dimension name may hold only letters, digits, '_' and '-', starting with a letter or digit (it becomes part "
        "of file names); rename it",
    "^[^,]+,[^,]+$": "should be 'metric,filter', e.g. 'acc_norm,none' or 'exact_match,strict-match'",
}


class ConfigError(ValueError):
    """A config that cannot run; the message names the key (or the file and line) and what to do."""


# --------------------------------------------------------------------------------------------
# Config files
# --------------------------------------------------------------------------------------------


class _DuplicateKey(yaml.MarkedYAMLError):
    """A mapping key written twice: plain YAML keeps the second value without a word."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (merge keys '<<' still override)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, collections.abc.Hashable) and key in seen:
                    first = seen[key]
                    alike = f" as {first.value!r}, which YAML reads alike" if first.value != key_node.value else ""
                    raise _DuplicateKey(
                        problem=f"key {key_node.value!r} appears twice (first on line {first.start_mark.line + 1}{alike}; "
                        "the second would silently replace the first); keep one",
                        problem_mark=key_node.start_mark,
                    )
                if isinstance(key, collections.abc.Hashable):
                    seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def read_config_file(path: str | Path) -> dict:
    """One YAML (or JSON) config file as a dict; ConfigError naming the file, and the line where known.

    Stricter than Snakemake's reader on purpose: a key written twice in one mapping is an error (YAML
    would keep the second silently), and so are an empty file and a top level that is not a mapping.
    """
    where = f"config file {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where} not found; check the path (relative paths are read from {Path.cwd()})") from None
    except IsADirectoryError:
        raise ConfigError(f"{where} is a directory; give the YAML file itself") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{where} cannot be read ({e.strerror}); check its permissions") from None
    try:
        config = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if isinstance(e, _DuplicateKey):
            raise ConfigError(f"{where}{at.split(', column')[0]}: {e.problem}") from None
        problem = " ".join(str(e.problem or e.context or "invalid YAML").split())
        hint = " (indent with spaces, not tabs)" if "\\t" in problem or "\t" in problem else ""
        raise ConfigError(
            f"{where}{at}: not valid YAML: {problem}{hint}. Fix the syntax there (a value holding ': ' or "
            "starting with '{', '[', '*', '&' or '%' needs quotes)"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(e).split())}. Fix the syntax") from None
    if config is None:
        raise ConfigError(f"{where} is empty; write the config as 'key: value' lines (see config.yaml)")
    if not isinstance(config, dict):
        raise ConfigError(
            f"{where}: the top level is {_what_it_is(config)}, not a mapping; write the config as 'key: value' lines "
            "(see config.yaml)"
        )
    return config


def read_config_files(paths) -> dict:
    """Several config files merged in order, as Snakemake merges its --configfile files.

    Each file updates the result key by key: a later file's value replaces an earlier one's, except
    that two mappings under the same key merge recursively (so a later file need only name the keys
    it changes). As in snakemake.utils.update_config, a list replaces a list whole, a mapping replaces
    a non-mapping, and an empty mapping changes nothing.
    """
    config: dict = {}
    for path in paths:
        update_config(config, read_config_file(path))
    return config


# --------------------------------------------------------------------------------------------
# The schema, and its errors in words
# --------------------------------------------------------------------------------------------


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


def _is_integer(checker, instance) -> bool:
    """A Python int, not a bool: JSON Schema counts 8.0 as an integer, but range(8.0) fails in a job."""
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(checker, instance) -> bool:
    """A finite int or float, not a bool (nan passes every minimum and maximum: a < b is False)."""
    return isinstance(instance, (int, float)) and not isinstance(instance, bool) and math.isfinite(instance)


_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number})
_Validator = validators.extend(_with_defaults(jsonschema.Draft202012Validator), type_checker=_TYPES)


def key_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def _problem(where, what: str) -> str:
    return f"config key '{key_path(where) if not isinstance(where, str) else where}': {what}"


_TYPE_WORDS = {
    "integer": "a whole number", "number": "a number", "string": "text", "boolean": "true or false",
    "array": "a list", "object": "a mapping (key: value lines)", "null": "null",
}


def _what_it_is(value: Any) -> str:
    """How YAML read a value, in words."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"the date {value.isoformat()}"
    if value is None:
        return "null (no value)"
    if isinstance(value, str):
        return f"the text {value!r}"
    return {list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _flow(value: Any) -> str:
    """A value as one would write it in the config (flow style)."""
    return json.dumps(value) if not isinstance(value, str) else value


def _bool_origin(value: bool) -> str:
    return "an unquoted yes, true or on" if value else "an unquoted no, false or off"


def _base60(value: int) -> str | None:
    """'2:4' for 124: YAML 1.1 reads unquoted digits separated by ':' as a base-60 number."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 60:
        high, low = divmod(value, 60)
        return f"{high}:{low}"
    return None


def _type_problem(where: list, error) -> str:
    """Wrong type, with the likely YAML cause: 8.0 for 8, unquoted on/yes/1234567/2024-01-01, 1e-3 as text."""
    value, expected = error.instance, error.validator_value
    expected = [expected] if isinstance(expected, str) else list(expected)
    want = " or ".join(_TYPE_WORDS[t] for t in expected)
    example = f", e.g. {_flow(error.schema['default'])}" if error.schema.get("default") is not None else ""
    numeric = {"integer", "number"} & set(expected)
    if isinstance(value, bool):
        if "string" in expected:
            return _problem(where, f"YAML read this value as {_what_it_is(value)} ({_bool_origin(value)}); write it quoted, "
                                   f"e.g. '{'on' if value else 'off'}'")
        return _problem(where, f"YAML read this value as {_what_it_is(value)} ({_bool_origin(value)}); write {want}{example}")
    if isinstance(value, float) and numeric and not math.isfinite(value):
        return _problem(where, f"{value} is not a finite number; write {want}{example}")
    if isinstance(value, float) and "integer" in expected and "number" not in expected:
        if value.is_integer():
            return _problem(where, f"{value!r} is a float; write a whole number ({int(value)})")
        return _problem(where, f"{value!r} is not a whole number; write one, e.g. {math.floor(value)} or {math.ceil(value)}")
    if "string" in expected and isinstance(value, (int, float, datetime.date)):
        if isinstance(value, datetime.date):
            return _problem(where, f"YAML read this value as {_what_it_is(value)}; write it quoted, e.g. '{value.isoformat()}'")
        return _problem(where, f"YAML read this value as {_what_it_is(value)}; write it quoted as you meant it, e.g. "
                               f"'{value}' (unquoted, YAML 1.1 also reads 12:30 as base 60 and 0123 as octal)")
    if isinstance(value, str) and numeric:
        if re.fullmatch(r"[-+]?[0-9]+[eE][-+]?[0-9]+", value.strip()):
            mantissa, exponent = re.split("[eE]", value.strip())
            return _problem(where, f"YAML 1.1 reads {value} as text (its floats need a dot); write {float(value)!r} or "
                                   f"{mantissa}.0e{exponent}")
        try:
            number = float(value)
        except ValueError:
            return _problem(where, f"{_what_it_is(value)} is not {want}; write {want}{example}")
        if math.isfinite(number):
            return _problem(where, f"{value!r} is quoted text; write it without quotes: {value.strip()}")
    if value is None:
        return _problem(where, f"has no value (YAML reads an empty value as null); write {want}{example}")
    if "array" in expected and not isinstance(value, (list, dict)):
        return _problem(where, f"YAML read {_what_it_is(value)}, not a list; write a list, e.g. [{_flow(value)}]")
    return _problem(where, f"YAML read {_what_it_is(value)} here; write {want}{example}")


def _enum_problem(where: list, error) -> str:
    """A value outside its choices: name the choices (and the close one, or the quoted N:M)."""
    value, choices = error.instance, error.validator_value
    allowed = ", ".join(str(c) for c in choices)
    if _base60(value) and any(isinstance(c, str) and ":" in c for c in choices):
        return _problem(where, f"YAML 1.1 read an unquoted {_base60(value)} as the base-60 number {value}; write it quoted: "
                               f"'{_base60(value)}' (choices: {allowed})")
    if isinstance(value, bool):
        return _problem(where, f"YAML read this value as {_what_it_is(value)} ({_bool_origin(value)}); choose one of: {allowed}")
    if value is None:
        return _problem(where, f"YAML read this value as null (an empty value, null or ~); choose one of: {allowed}")
    lowered = {str(c).lower(): c for c in choices}
    close = difflib.get_close_matches(str(value).lower(), list(lowered), n=1, cutoff=0.6)
    hint = f" (did you mean {lowered[close[0]]!r}?)" if close else ""
    return _problem(where, f"{value!r} is not one of: {allowed}{hint}. Choose one of them")


def _range_problem(where: list, error) -> str:
    """A number out of range, with the whole range it must lie in."""
    schema = error.schema
    bounds = [f"{op} {schema[key]}" for key, op in (("minimum", ">="), ("exclusiveMinimum", ">"),
                                                     ("maximum", "<="), ("exclusiveMaximum", "<")) if key in schema]
    noun = f"{schema['title']} " if "title" in schema else ""
    return _problem(where, f"{noun}{error.instance!r} must be {' and '.join(bounds)}")


def _size_problem(where: list, error) -> str:
    """An empty list or mapping where at least one entry is needed."""
    items = error.schema.get("items", {})
    choices = f" (choose from: {', '.join(map(str, items['enum']))})" if "enum" in items else ""
    if error.validator == "minProperties":
        return _problem(where, f"is empty; define at least {error.validator_value} entry{choices}")
    return _problem(where, f"the list should be non-empty; list at least {error.validator_value} value{choices}")


def _unique_problem(where: list, error) -> str:
    """A list with a repeated value: name the value."""
    seen: list = []
    for item in error.instance:
        if any(item == s and type(item) is type(s) for s in seen):
            shown = repr(item) if isinstance(item, str) else _flow(item)
            return _problem(where, f"{shown} is listed twice; list each value once")
        seen.append(item)
    return _problem(where, "a value is listed twice; list each value once")


def _pattern_problem(where: list, error) -> str:
    words = PATTERN_WORDS.get(error.validator_value, f"does not have the form this key needs ({error.validator_value})")
    return _problem(where, f"{error.instance!r} {words}")


def _name_problem(where: list, error) -> str:
    """A bad mapping key (propertyNames): the error is about the name, so the name joins the path."""
    name = error.instance
    if error.validator == "not":
        return _problem(where + [name], "the name 'none' is reserved for data-free pruning; rename it")
    if error.validator == "minLength":
        return _problem(where + [name], "the name is empty; write one")
    return _problem(where + [name], PATTERN_WORDS.get(error.validator_value, "not a valid name; rename it"))


def _branch_problem(where: list, error) -> str:
    """oneOf/anyOf: describe the branch written for the value's type, not 'valid under none of them'."""
    branches = error.validator_value
    fits = [i for i, b in enumerate(branches) if "type" not in b or _Validator(b).is_type(error.instance, b["type"])]
    inner = [e for e in error.context if e.schema_path and e.schema_path[0] in fits]
    if len(fits) == 1 and inner:
        return _describe(max(inner, key=lambda e: len(e.absolute_path)))
    kinds = " or ".join(_TYPE_WORDS.get(b.get("type"), str(b.get("type"))) for b in branches)
    return _problem(where, f"YAML read {_what_it_is(error.instance)} here; write {kinds}")


def _required_problem(where: list, error) -> str:
    missing = error.validator_value[[k in error.instance for k in error.validator_value].index(False)]
    kind = error.instance.get("kind") if isinstance(error.instance, dict) else None
    noun = _noun(where)
    why = f"a {kind} {noun} needs it" if "then" in error.schema_path and kind and noun else "it has no default"
    return _problem(where + [missing], f"required but missing ({why}); add it")


def _unknown_key_problem(where: list, error) -> str:
    allowed = sorted(error.schema.get("properties", {}))
    extra = sorted(set(error.instance) - set(allowed))[0]
    noun, kind = _noun(where), error.instance.get("kind")
    if noun in KEYS_BY_KIND and kind in KEYS_BY_KIND[noun]:
        return _problem(where + [extra], f"unknown key. A {kind} {noun}'s keys: {', '.join(KEYS_BY_KIND[noun][kind])}")
    close = difflib.get_close_matches(extra, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return _problem(where + [extra], f"unknown key{hint}. Allowed here: {', '.join(allowed)}")


def _noun(where: list) -> str | None:
    """'source', 'model' or 'builder' when the path is one of those entries."""
    if len(where) == 3 and where[:2] == ["calibration", "sources"]:
        return "source"
    if len(where) == 3 and where[:2] == ["calibration", "builders"]:
        return "builder"
    if len(where) == 2 and where[0] == "models":
        return "model"
    return None


_PROBLEMS = {
    "type": _type_problem,
    "enum": _enum_problem,
    "minimum": _range_problem,
    "maximum": _range_problem,
    "exclusiveMinimum": _range_problem,
    "exclusiveMaximum": _range_problem,
    "minItems": _size_problem,
    "minProperties": _size_problem,
    "uniqueItems": _unique_problem,
    "pattern": _pattern_problem,
    "oneOf": _branch_problem,
    "anyOf": _branch_problem,
    "required": _required_problem,
    "additionalProperties": _unknown_key_problem,
    "minLength": lambda where, error: _problem(where, "is empty; write a value or leave the key out"),
}


def _describe(error: jsonschema.ValidationError) -> str:
    """One schema error in words: the key, what is wrong, what to do."""
    where = list(error.absolute_path)
    if "propertyNames" in error.schema_path:
        return _name_problem(where, error)
    if error.validator in _PROBLEMS:
        return _PROBLEMS[error.validator](where, error)
    return _problem(where, f"{' '.join(error.message.split())}; see resources/config.schema.yaml")


def _check_names(node: Any, where: tuple = ()) -> None:
    """Every mapping key is text: YAML 1.1 reads an unquoted 2024, 1.5, on, yes, no, true or null as a
    number, a boolean or null, and such a name would pass the schema (it checks only text names)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                if isinstance(key, bool):
                    what = f"the boolean {str(key).lower()} ({_bool_origin(key)}); quote it, e.g. '{'on' if key else 'off'}':"
                elif key is None:
                    what = "null (an unquoted null or ~, or nothing before the colon); write the name, quoted: 'null':"
                else:
                    shown = key.isoformat() if isinstance(key, datetime.date) else key
                    what = f"{_what_it_is(key)}; quote it: '{shown}':"
                raise ConfigError(_problem([*where, str(key)], f"YAML read this name as {what}"))
            _check_names(value, (*where, key))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _check_names(item, (*where, i))


@functools.lru_cache(maxsize=4)
def _schema(schema_path: str) -> dict:
    return yaml.safe_load(Path(schema_path).read_text())


def validate_config(config: dict[str, Any], schema_path: Path = SCHEMA_PATH, workdir: Path | None = None) -> dict:
    """Validate in place (filling defaults) and return the config; raise ConfigError naming the key."""
    if not isinstance(config, dict):
        raise ConfigError(_problem([], f"the config is {_what_it_is(config)}, not a mapping; write 'key: value' lines"))
    _check_names(config)
    schema = copy.deepcopy(_schema(str(schema_path)))
    errors = sorted(_Validator(schema).iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        # Report the deepest error along the first failing path: it names the most specific key.
        first = errors[0]
        same_branch = [e for e in errors if list(e.absolute_path)[: len(first.absolute_path)] == list(first.absolute_path)]
        raise ConfigError(_describe(max(same_branch, key=lambda e: len(e.absolute_path))))
    _check_semantics(config, Path(workdir or Path.cwd()))
    return config


# --------------------------------------------------------------------------------------------
# Semantic checks: one helper per kind of check
# --------------------------------------------------------------------------------------------


def builder_knobs(kind: str) -> set[str]:
    """The config keys a calibration builder of this kind reads (besides 'kind')."""
    if kind == "mix":
        return {"sources"}
    from calmix.calibration.selfgen import GENERATION_KNOBS, SELECTION_KNOBS  # imports torch: only for self-generated sets

    extra = {"batch_size"} | ({"prefix_source"} if kind == "sgs" else set())
    return set(GENERATION_KNOBS[kind]) | set(SELECTION_KNOBS[kind]) | extra


def llama_linear_names(num_layers: int) -> list[str]:
    """The decoder-layer linears of a LLaMA-named model (LlamaForCausalLM, Mistral, Qwen2), in module
    order, without lm_head (never pruned): what pruning.skip patterns are matched against."""
    members = [f"self_attn.{p}_proj" for p in "qkvo"] + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]
    return [f"model.layers.{i}.{m}" for i in range(num_layers) for m in members]


def model_facts(name: str, config: dict, workdir: Path) -> dict | None:
    """What is known of a model before it is loaded: {max_positions, positions_key, linears, inputs}
    (inputs: {config key: in_features it sets}); None for a hub model, known only once fetched."""
    spec = config["models"][name]
    if spec["kind"] == "world":
        arch = config["world"]["model"]
        return {
            "max_positions": arch["max_position_embeddings"],
            "positions_key": "world.model.max_position_embeddings",
            "linears": llama_linear_names(arch["num_layers"]),
            "inputs": {"world.model.hidden_size": arch["hidden_size"],
                       "world.model.intermediate_size": arch["intermediate_size"]},
        }
    if spec["kind"] == "local":
        try:
            hf = json.loads((workdir / spec["path"] / "config.json").read_text())
        except (OSError, ValueError):
            return None
        where = f"{spec['path']}/config.json"
        facts: dict = {"max_positions": hf.get("max_position_embeddings"), "positions_key": f"max_position_embeddings in {where}",
                       "linears": None, "inputs": {}}
        if hf.get("model_type") in LLAMA_LIKE and isinstance(hf.get("num_hidden_layers"), int):
            facts["linears"] = llama_linear_names(hf["num_hidden_layers"])
            heads, hidden = hf.get("num_attention_heads"), hf.get("hidden_size")
            head_dim = hf.get("head_dim") or (hidden // heads if hidden and heads else None)
            facts["inputs"] = {f"hidden_size in {where}": hidden, f"intermediate_size in {where}": hf.get("intermediate_size"),
                               f"num_attention_heads x head_dim in {where}": heads * head_dim if heads and head_dim else None}
        return facts
    return None


def _check_kind_keys(where: str, noun: str, spec: dict) -> None:
    """A key the kind does not read is a mistake (a world source with max_docs still gives 400 documents)."""
    allowed = KEYS_BY_KIND[noun][spec["kind"]]
    stray = [k for k in spec if k not in allowed]
    if stray:
        raise ConfigError(
            f"config key '{where}.{stray[0]}': a {spec['kind']} {noun} does not read {stray[0]!r}. "
            f"Its keys: {', '.join(allowed)}"
        )


def _check_template(where: str, spec: dict) -> None:
    """The corpus's own template rule (calmix.calibration.corpora.template_fields), and what the records can fill."""
    from calmix.calibration.corpora import FORMATS, TemplateError, template_fields

    if "chat_field" in spec and "template" in spec:
        raise ConfigError(f"config key '{where}.template': a source with chat_field renders the messages with the "
                          "model's chat template and does not read 'template'; remove one of the two")
    if "chat_field" in spec:
        return
    try:
        fields = template_fields(spec.get("template", "{text}"))
    except TemplateError as e:
        raise ConfigError(f"config key '{where}.template': {e}") from None
    fmt = spec.get("format", "auto")
    if fmt == "auto" and spec["kind"] == "local":
        fmt = FORMATS.get(Path(spec["path"]).suffix.lower(), "auto")
    if spec["kind"] == "local" and fmt == "text" and fields != ["text"]:
        raise ConfigError(f"config key '{where}.template': text files give each document one field, 'text', but the "
                          f"template reads {fields}; read {{text}} only")


def _check_documents(where: str, spec: dict, calibration: dict) -> None:
    """sampling: documents starts every window with a new document, so it needs nsamples of them."""
    from calmix.calibration.corpora import WORLD_DOCS

    if spec.get("sampling", calibration["sampling"]) != "documents":
        return
    key = "docs" if spec["kind"] == "world" else "max_docs"
    count = spec.get("docs", WORLD_DOCS) if spec["kind"] == "world" else spec.get("max_docs")
    if count is not None and count < calibration["nsamples"]:
        raise ConfigError(
            f"config key '{where}.{key}': {count} documents cannot fill calibration.nsamples = {calibration['nsamples']} "
            f"windows with sampling: documents (each window starts a new document); raise {key} to at least "
            f"{calibration['nsamples']} or use sampling: windows"
        )


def _check_sources(config: dict, workdir: Path) -> None:
    from calmix.calibration.corpora import local_files
    from calmix.world.domain import WORLD_GENERATORS

    for key, spec in config["calibration"]["sources"].items():
        where = f"calibration.sources.{key}"
        _check_kind_keys(where, "source", spec)
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
        if spec["kind"] != "world":
            _check_template(where, spec)
        _check_documents(where, spec, config["calibration"])


def _check_builders(config: dict) -> None:
    sources = list(config["calibration"]["sources"])
    calibration = config["calibration"]
    for key, spec in calibration["builders"].items():
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
                    f"config key '{where}.sources': {', '.join(map(repr, unknown))} "
                    f"{'is not a calibration source' if len(unknown) == 1 else 'are not calibration sources'}. "
                    f"Choose from: {', '.join(sources)}"
                )
            continue
        _check_pool(where, spec, calibration)


def _check_pool(where: str, spec: dict, calibration: dict) -> None:
    """The pool sizes the DAG computes (calmix.calibration.selfgen.pool_size), and room for SGS's prompts."""
    from calmix.calibration.selfgen import GENERATION_KNOBS, SELECTION_KNOBS, pool_size

    kind = spec["kind"]
    generation = {k: spec.get(k, v) for k, v in GENERATION_KNOBS[kind].items()}
    selection = {k: spec.get(k, v) for k, v in SELECTION_KNOBS[kind].items()}
    try:
        pool_size(kind, calibration["nsamples"], generation, selection)
    except ValueError as e:
        raise ConfigError(f"config key '{where}.pool_size': {e}") from None
    prefix = generation.get("prefix_tokens")
    if prefix is not None and prefix > calibration["seqlen"] - 2:
        raise ConfigError(
            f"config key '{where}.prefix_tokens': a prompt of BOS + {prefix} tokens leaves no token to generate in a "
            f"window of calibration.seqlen = {calibration['seqlen']}; use at most {calibration['seqlen'] - 2}"
        )


def _check_models(config: dict, workdir: Path) -> None:
    for key, spec in config["models"].items():
        _check_kind_keys(f"models.{key}", "model", spec)
        if spec["kind"] == "local" and not (workdir / spec["path"] / "config.json").is_file():
            raise ConfigError(
                f"config key 'models.{key}.path': {spec['path']!r} is not a save_pretrained folder "
                "(no config.json found there); point it at the folder that holds config.json"
            )


def _check_world_model(config: dict) -> None:
    """The world's LLaMA must be buildable: heads split hidden_size evenly into an even head_dim (RoPE
    rotates pairs of dimensions), and training windows fit its positions."""
    if not any(spec["kind"] == "world" for spec in config["models"].values()):
        return
    arch, train = config["world"]["model"], config["world"]["train"]
    hidden, heads = arch["hidden_size"], arch["num_heads"]
    if hidden % heads:
        raise ConfigError(
            f"config key 'world.model.hidden_size': {hidden} is not a multiple of world.model.num_heads = {heads}, so "
            f"the heads cannot split it; use e.g. {2 * heads * max(1, round(hidden / (2 * heads)))}"
        )
    if (hidden // heads) % 2:
        raise ConfigError(
            f"config key 'world.model.num_heads': {heads} heads give a head dimension of {hidden // heads}, but rotary "
            f"embeddings need an even one; choose num_heads so that hidden_size / num_heads is even"
        )
    if train["seqlen"] > arch["max_position_embeddings"]:
        raise ConfigError(
            f"config key 'world.train.seqlen': {train['seqlen']} tokens exceed world.model.max_position_embeddings = "
            f"{arch['max_position_embeddings']}; lower it or raise max_position_embeddings"
        )


def _check_context(config: dict, facts: dict) -> None:
    """Calibration windows fit every model whose context length is known (a hub model's is not, yet)."""
    seqlen = config["calibration"]["seqlen"]
    for model, known in facts.items():
        if known and known["max_positions"] and seqlen > known["max_positions"]:
            raise ConfigError(
                f"config key 'calibration.seqlen': {seqlen} tokens exceed the {known['max_positions']} positions of "
                f"model {model!r} ({known['positions_key']}); lower calibration.seqlen to at most "
                f"{known['max_positions']}"
            )


def _check_structures(config: dict, facts: dict) -> None:
    """N:M groups run along the inputs: every in_features, and SparseGPT's blocksize, a multiple of M."""
    pruning = config["pruning"]
    for structure in pruning["structures"]:
        if structure == "unstructured":
            continue
        m = int(structure.split(":")[1])
        if "sparsegpt" in pruning["methods"] and pruning["blocksize"] % m:
            raise ConfigError(
                f"config key 'pruning.blocksize': {pruning['blocksize']} is not a multiple of {m}, which structure "
                f"{structure!r} needs (a SparseGPT block holds whole groups of {m}); use e.g. {m * max(1, pruning['blocksize'] // m)}"
            )
        for model, known in facts.items():
            for key, size in (known or {}).get("inputs", {}).items():
                if size and size % m:
                    raise ConfigError(
                        f"config key '{key if key.startswith('world.') else f'models.{model}.path'}': {key} = {size} is not "
                        f"a multiple of {m}, which structure {structure!r} needs (inputs come in groups of {m}); "
                        f"use a multiple of {m} or drop {structure!r}"
                    )


def _check_skip(config: dict, facts: dict) -> None:
    """pruning.skip matched as calmix.pruning.driver matches it: each pattern must match a linear layer (else a
    typo), and the patterns must leave each model something to prune (else the 'pruned' checkpoint is
    the dense model). Checked where the linear names can be derived without loading the model."""
    patterns = config["pruning"]["skip"]
    named = {model: known["linears"] for model, known in facts.items() if known and known["linears"]}
    if not patterns or not named:
        return
    if len(named) == len(config["models"]):
        every = [n for names in named.values() for n in names]
        for i, pattern in enumerate(patterns):
            if not any(fnmatch(n, pattern) for n in every):
                never = " (lm_head and the embeddings are never pruned)" if fnmatch("lm_head", pattern) else ""
                raise ConfigError(
                    f"config key 'pruning.skip[{i}]': {pattern!r} matches no linear layer{never}; names look like "
                    f"{every[0]} (fnmatch patterns, e.g. '*.mlp.down_proj'). Fix or remove it"
                )
    for model, names in named.items():
        if all(any(fnmatch(n, p) for p in patterns) for n in names):
            raise ConfigError(
                f"config key 'pruning.skip': {patterns} skip all {len(names)} linear layers of model {model!r}, so it "
                "would stay dense; skip fewer layers"
            )


@functools.lru_cache(maxsize=None)
def _task_config(task: str) -> dict:
    """A world task's YAML (its !function tags kept as text)."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    return yaml.load((TASK_DIR / f"{task}.yaml").read_text(), Loader=Loader) or {}  # noqa: S506 (a SafeLoader)


def _shot_pool(task: str, items: int) -> int | None:
    """How many items a world task can draw shots from: None when it takes none (rolling likelihood);
    with fewshot_split == test_split lm-eval draws num_fewshot + 1 and drops the item itself, so one
    less than the items. 'limit' does not shrink the pool: shots come from the whole split."""
    spec = _task_config(task)
    if spec.get("output_type") == "loglikelihood_rolling":
        return None
    return items - 1 if spec.get("fewshot_split") == spec.get("test_split") else items


def _check_dimensions(config: dict) -> None:
    from calmix.evaluation.harness import executes_code

    world_tasks = {p.stem for p in TASK_DIR.glob("*.yaml")}
    items = config["world"]["eval_items"]
    for dim, spec in config["evaluation"]["dimensions"].items():
        where = f"evaluation.dimensions.{dim}"
        for i, task in enumerate(spec["tasks"]):
            if executes_code(task) and not config["evaluation"]["allow_code_execution"]:
                raise ConfigError(
                    f"config key '{where}.tasks[{i}]': lm-eval task {task!r} executes the code "
                    "the model writes. Set evaluation.allow_code_execution: true to run it (on a machine where "
                    "running untrusted code is acceptable), or remove the task"
                )
            if task.startswith("world_") and task not in world_tasks:
                raise ConfigError(
                    f"config key '{where}.tasks[{i}]': unknown world task {task!r}. Known: {', '.join(sorted(world_tasks))}"
                )
            pool = _shot_pool(task, items) if task in world_tasks else None
            if pool is not None and spec["num_fewshot"] > pool:
                raise ConfigError(
                    f"config key '{where}.num_fewshot': {spec['num_fewshot']} shots cannot be drawn for {task}, which has "
                    f"world.eval_items = {items} items and draws each item's shots from the other {pool}; lower "
                    f"num_fewshot to at most {pool} or raise world.eval_items"
                )
        for task in spec["metric"]:
            if task not in spec["tasks"]:
                raise ConfigError(
                    f"config key '{where}.metric.{task}': {task!r} is not a task of this "
                    f"dimension. Its tasks: {', '.join(spec['tasks'])}"
                )


def _check_metrics(config: dict) -> None:
    from calmix.calibration.metrics import METRICS

    for i, name in enumerate(config["metrics"]):
        if name not in METRICS:
            raise ConfigError(f"config key 'metrics[{i}]': unknown metric {name!r}. Choose from: {', '.join(METRICS)}")


def _check_semantics(config: dict, workdir: Path) -> None:
    """What the schema cannot say: keys read by other kinds, names that must exist, and values beyond what
    the models or data can give. Models first: later checks read what is known of them."""
    _check_models(config, workdir)
    _check_world_model(config)
    _check_sources(config, workdir)
    _check_builders(config)
    sources = list(config["calibration"]["sources"])
    baseline = config["report"]["baseline"]
    if baseline is not None and baseline not in sources:
        raise ConfigError(f"config key 'report.baseline': {baseline!r} is not a calibration source. "
                          f"Choose from: {', '.join(sources)}")
    facts = {model: model_facts(model, config, workdir) for model in config["models"]}
    _check_context(config, facts)
    _check_structures(config, facts)
    _check_skip(config, facts)
    _check_metrics(config)
    _check_dimensions(config)


def error_line(error: ConfigError, paths) -> str:
    """The one line a config error prints: a file problem names its file, any other the study's files."""
    where = "" if str(error).startswith("config file") else f"invalid config ({', '.join(map(str, paths))}): "
    return f"calmix error: {where}{error}"


def main(argv: list[str] | None = None) -> int:
    """``python -m calmix.config FILE...``: read and check a study's config files as the workflow will.

    ``make run`` calls this first, because Snakemake's own reading of --configfile names no file or
    line when the YAML is broken.
    """
    import sys

    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m calmix.config CONFIG.yaml [MORE.yaml ...]", file=sys.stderr)
        return 2
    try:
        validate_config(read_config_files(paths))
    except ConfigError as e:
        print(error_line(e, paths), file=sys.stderr)
        return 1
    print(f"config OK: {', '.join(map(str, paths))}")
    return 0

