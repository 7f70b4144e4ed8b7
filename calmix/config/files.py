"""Reading a study's config files: duplicate keys, YAML syntax and the top level, each a one-line
ConfigError naming the file and line."""

from __future__ import annotations

import collections.abc
import datetime
from pathlib import Path
from typing import Any

import yaml
from snakemake.utils import update_config


class ConfigError(ValueError):
    """A config that cannot run; the message names the key (or the file and line) and what to do."""


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
            f"{where}: the top level is {what_it_is(config)}, not a mapping; write the config as 'key: value' lines "
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


def error_line(error: ConfigError, paths) -> str:
    """The one line a config error prints: a file problem names its file, any other the study's files."""
    where = "" if str(error).startswith("config file") else f"invalid config ({', '.join(map(str, paths))}): "
    return f"calmix error: {where}{error}"


type_words = {
    "integer": "a whole number", "number": "a number", "string": "text", "boolean": "true or false",
    "array": "a list", "object": "a mapping (key: value lines)", "null": "null",
}


def what_it_is(value: Any) -> str:
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
