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

import copy
from pathlib import Path
from typing import Any

from calmix.config.checks import check_semantics
from calmix.config.files import ConfigError, error_line, read_config_file, read_config_files
from calmix.config.schema import SCHEMA_PATH, Validator, check_names, describe, load_schema, problem, what_it_is

__all__ = ["ConfigError", "error_line", "read_config_file", "read_config_files", "validate_config", "main"]


def validate_config(config: dict[str, Any], schema_path: Path = SCHEMA_PATH, workdir: Path | None = None) -> dict:
    """Validate in place (filling defaults) and return the config; raise ConfigError naming the key."""
    if not isinstance(config, dict):
        raise ConfigError(problem([], f"the config is {what_it_is(config)}, not a mapping; write 'key: value' lines"))
    check_names(config)
    schema = copy.deepcopy(load_schema(str(schema_path)))
    errors = sorted(Validator(schema).iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        # Report the deepest error along the first failing path: it names the most specific key.
        first = errors[0]
        same_branch = [e for e in errors if list(e.absolute_path)[: len(first.absolute_path)] == list(first.absolute_path)]
        raise ConfigError(describe(max(same_branch, key=lambda e: len(e.absolute_path))))
    check_semantics(config, Path(workdir or Path.cwd()))
    return config


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
