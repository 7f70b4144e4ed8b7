"""Raw calibration corpora: one list of documents per source, independent of any model.

Kinds: 'world' (the built-in generator) and 'local' (a .txt file with documents separated by blank
lines, or a .jsonl file with one record per document).
"""

from __future__ import annotations

import json
from pathlib import Path

from calmix.world import World


class CorpusError(ValueError):
    """A source that cannot give documents; the message names the source and file."""


def load_documents(name: str, spec: dict, world_seed: int = 0) -> list[str]:
    """The documents of one calibration source, in a deterministic order."""
    if spec["kind"] == "world":
        return World(world_seed).documents(spec["generator"], spec["docs"], seed=1)
    if spec["kind"] == "local":
        return _local_documents(name, Path(spec["path"]), spec.get("field", "text"))
    raise CorpusError(f"source {name!r}: unknown kind {spec['kind']!r}")


def _local_documents(name: str, path: Path, field: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CorpusError(f"source {name!r}: cannot read {path}: {e}") from e
    if path.suffix == ".jsonl":
        docs = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"source {name!r}: {path} line {lineno} is not JSON: {e}") from e
            if field not in record:
                raise CorpusError(
                    f"source {name!r}: {path} line {lineno} has no field {field!r}; fields present: {sorted(record)}"
                )
            docs.append(str(record[field]))
    else:
        docs = [block.strip() for block in text.split("\n\n")]
    docs = [d for d in docs if d]
    if not docs:
        raise CorpusError(f"source {name!r}: {path} holds no documents")
    return docs


def write_corpus(docs: list[str], path: str | Path) -> None:
    from calmix.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for i, doc in enumerate(docs):
                f.write(json.dumps({"id": i, "text": doc}, ensure_ascii=False) + "\n")


def read_corpus(path: str | Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]
