"""Raw calibration corpora: one list of documents per source, independent of any model.

Kinds:

* ``world``: the built-in generator (calmix.world.domain).
* ``local``: jsonl, json, parquet, csv or plain-text files, or a glob of them.
* ``hub``: a dataset on the Hugging Face hub (or a dataset folder on disk), via ``datasets.load_dataset``.
* ``installed``: files of installed distributions or the standard library (calmix.calibration.installed).

Each record becomes one document through the source's ``template`` (``str.format`` over the record's
fields, e.g. ``"{question}\\n{answer}"``) or, with ``chat_field``, stays a list of chat messages that
the tokenize step renders with the model's own chat template. Every document keeps the id of the
record it came from (``file:line``, ``split:row``, ``generator:index``) so shards can name them.
The corpus's manifest is calmix.core.records.CorpusManifest.
"""

from __future__ import annotations

import _string  # str.format's own field-name parser
import csv
import glob
import importlib
import json
import logging
import re
import string
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, cast

from calmix.core.io import atomic_path, sha256_file, write_json
from calmix.core.records import CorpusManifest, CorpusProvenance

log = logging.getLogger(__name__)

#: File formats of local sources, by extension (``format: auto``).
FORMATS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text", ".md": "text"}


#: Documents a world source generates unless it says otherwise.
WORLD_DOCS = 400

#: The code each kind of source runs beyond this module, loaded by name (not imported here), so that a
#: corpus job runs, and its rule's code param digests, only its own kind's code: editing the world
#: reruns world corpora, editing the hub code reruns hub corpora, and neither reruns local ones.
KIND_MODULES = {
    "world": ["calmix.world.domain"], "local": [], "hub": ["calmix.fetch.hub"],
    "installed": ["calmix.calibration.installed"],
}


def _kind_module(kind: str):
    return importlib.import_module(KIND_MODULES[kind][0])


class CorpusError(ValueError):
    """A source that cannot give documents; the message names the source and the file or dataset."""


def load_documents(name: str, spec: dict, world_seed: int = 0) -> tuple[list[dict], CorpusProvenance]:
    """The documents of one calibration source in a deterministic order, and their provenance
    (CorpusProvenance: the seed, the files and their sha256, or the dataset and its revision).

    A document is ``{"id": ..., "text": ...}`` or, for chat sources, ``{"id": ..., "messages": [...]}``.
    """
    kind = spec["kind"]
    if kind == "world":
        texts = _kind_module("world").World(world_seed).documents(spec["generator"], spec.get("docs", WORLD_DOCS), seed=1)
        docs = [{"id": f"{spec['generator']}:{i}", "text": t} for i, t in enumerate(texts)]
        return docs, {"world_seed": world_seed}
    if kind == "installed":
        docs, provenance = _kind_module("installed").load_installed(name, spec)
        docs = docs[: spec.get("max_docs")]
        if not docs:
            raise CorpusError(f"source {name!r}: the files {spec['files']} of {spec['packages']} give no {spec.get('part', 'calibration')} documents")
        return docs, provenance
    if kind == "local":
        files = local_files(spec["path"])
        if not files:
            pattern = spec["path"]
            what = f"no file matches {pattern!r}" if glob.has_magic(pattern) else f"{pattern} does not exist or is not a file"
            raise CorpusError(f"source {name!r}: {what}")
        records = (r for path in files for r in _read_file(name, path, spec.get("format", "auto")))
        provenance: CorpusProvenance = {"files": [{"path": str(p), "sha256": sha256_file(p)} for p in files]}
    elif kind == "hub":
        records, provenance = _hub_records(name, spec)
    else:
        raise CorpusError(f"source {name!r}: unknown kind {kind!r}")
    docs = list(islice(_documents(name, spec, records), spec.get("max_docs")))
    if not docs:
        raise CorpusError(f"source {name!r}: {_where(spec)} holds no non-empty documents")
    return docs, provenance


def local_files(pattern: str) -> list[Path]:
    """The files of a local source: one path, or a glob (sorted, so the order never changes); the
    config check, the DAG (as the corpus rule's inputs) and the corpus all read this list."""
    if glob.has_magic(pattern):
        return [Path(p) for p in sorted(glob.glob(pattern, recursive=True)) if Path(p).is_file()]
    return [Path(pattern)] if Path(pattern).is_file() else []


# --------------------------------------------------------------------------------------------
# Records -> documents
# --------------------------------------------------------------------------------------------


class TemplateError(ValueError):
    """A template that does more than read record fields; the message says what to write instead."""


def template_fields(template: str) -> list[str]:
    """Top-level record fields a template reads: '{q}\\n{choices[text][0]}' -> ['q', 'choices'].

    The one rule for templates, shared by the corpus and the config check: a replacement field names a
    record field and may index into it, nothing else. Attribute access ({text.upper}) would format a
    bound method's repr, whose memory address differs between runs, so the corpus would too;
    conversions ({text!r}), format specs ({text:>10}) and positional fields ({}, {0}) are not field
    reads either. A template that reads no field makes every document the same text. Raises
    TemplateError naming the field and what to write instead.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise TemplateError(f"{template!r} is not a str.format template ({e}); write a literal brace as {{{{ or }}}}") from None
    fields: list[str] = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        top, rest = _string.formatter_field_name_split(field)
        if top == "" or isinstance(top, int):
            raise TemplateError(f"{shown} is a positional field, which a record cannot fill; name a field, e.g. {{text}}")
        attributes = [key for is_attribute, key in rest if is_attribute]
        if attributes:
            raise TemplateError(
                f"{shown} reads the attribute {attributes[0]!r} of field {top!r} (a method would be formatted with its "
                f"memory address, which differs between runs); read fields only, indexing as in {{choices[text][0]}}"
            )
        if conversion:
            raise TemplateError(f"{shown} converts the value with !{conversion}; write {{{field}}} (templates only read fields)")
        if spec:
            raise TemplateError(f"{shown} formats the value with ':{spec}'; write {{{field}}} (templates only read fields)")
        if top not in fields:
            fields.append(top)
    if not fields:
        raise TemplateError(f"{template!r} reads no record field, so every document would be the same text; name one, e.g. {{text}}")
    return fields


def _documents(name: str, spec: dict, records: Iterable[tuple[str, dict]]) -> Iterator[dict]:
    chat_field = spec.get("chat_field")
    template = spec.get("template", "{text}")
    try:
        needed = [chat_field] if chat_field else template_fields(template)
    except TemplateError as e:
        raise CorpusError(f"source {name!r}: template {e}") from None
    for rid, record in records:
        missing = [f for f in needed if f not in record]
        if missing:
            what = "chat_field" if chat_field else "template field"
            raise CorpusError(
                f"source {name!r}: {what} {missing[0]!r} is missing from record {rid} of {_where(spec)}; "
                f"fields present: {', '.join(sorted(record)) or '(none)'}"
            )
        if chat_field:
            messages = record[chat_field]
            if not _is_chat(messages):
                raise CorpusError(
                    f"source {name!r}: record {rid} field {chat_field!r} is not a list of {{role, content}} messages"
                )
            if messages:
                yield {"id": rid, "messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
            continue
        try:
            text = template.format_map(record)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise CorpusError(f"source {name!r}: template {template!r} fails on record {rid}: {e!r}") from e
        if text.strip():
            yield {"id": rid, "text": text}


def _is_chat(messages: Any) -> bool:
    return isinstance(messages, list) and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in messages)


def _where(spec: dict) -> str:
    if spec["kind"] == "hub":
        return f"dataset {spec['path']!r}" + (f" ({spec['name']})" if spec.get("name") else "")
    return str(spec.get("path", spec.get("generator")))


# --------------------------------------------------------------------------------------------
# Local files
# --------------------------------------------------------------------------------------------


def _read_file(name: str, path: Path, fmt: str) -> Iterator[tuple[str, dict]]:
    """(record id, record) for every record of one local file."""
    if fmt == "auto":
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise CorpusError(
                f"source {name!r}: cannot tell the format of {path} from its extension; "
                f"set format to one of {sorted(set(FORMATS.values()))}"
            )
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            for i, record in enumerate(pq.read_table(path).to_pylist()):
                yield f"{path}:{i}", record
            return
        with open(path, encoding="utf-8", newline="" if fmt == "csv" else None) as f:
            if fmt == "jsonl":
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        yield f"{path}:{lineno}", _json_record(name, path, line, lineno)
            elif fmt == "json":
                data = json.load(f)
                if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
                    data = next(iter(data.values()))  # {"data": [...]}
                if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                    raise CorpusError(f"source {name!r}: {path} must hold a JSON list of objects")
                for i, record in enumerate(data):
                    yield f"{path}:{i}", record
            elif fmt == "csv":
                for i, record in enumerate(csv.DictReader(f)):
                    yield f"{path}:{i}", record
            else:  # text: documents separated by blank lines
                for i, block in enumerate(re.split(r"\n\s*\n", f.read())):
                    if block.strip():
                        yield f"{path}:{i}", {"text": block.strip()}
    except CorpusError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error, ValueError) as e:
        raise CorpusError(f"source {name!r}: cannot read {path} as {fmt}: {e}") from e


def _json_record(name: str, path: Path, line: str, lineno: int) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise CorpusError(f"source {name!r}: {path} line {lineno} is not JSON: {e}") from e
    if not isinstance(record, dict):
        raise CorpusError(f"source {name!r}: {path} line {lineno} is not a JSON object")
    return record


# --------------------------------------------------------------------------------------------
# Hugging Face datasets
# --------------------------------------------------------------------------------------------


def _hub_records(name: str, spec: dict) -> tuple[Iterator[tuple[str, dict]], CorpusProvenance]:
    """Records of a hub dataset (or a dataset folder on disk), and the revision they come from."""
    hub = _kind_module("hub")
    path, split = spec["path"], spec.get("split", "train")
    on_disk = Path(path).is_dir()
    kwargs = {
        "name": spec.get("name"),
        "split": split,
        "data_files": spec.get("data_files"),
        "streaming": spec.get("streaming", False),
    }
    provenance: CorpusProvenance = {
        "dataset": path, "config": spec.get("name"), "split": split, "data_files": spec.get("data_files"),
    }
    if on_disk:
        provenance["revision"] = None  # a folder has no revision; its files are hashed by the corpus
    else:
        kwargs["revision"] = spec["revision"]
        provenance["revision"] = spec["revision"]
        provenance["resolved_revision"] = hub.resolve_dataset_revision(path, spec["revision"])
    try:
        dataset = hub.load_dataset(path, **kwargs, remote=not on_disk)
    except hub.HubUnreachable as e:
        raise CorpusError(
            f"source {name!r}: dataset {path!r} (revision {spec.get('revision')}) is not in the local Hugging Face "
            f"cache and the hub cannot be reached ({e}). Run `snakemake prefetch --configfile <your config>` on a "
            "machine with network access first (or point HF_HOME at a cache that holds it)."
        ) from None
    except Exception as e:  # datasets raises many types (FileNotFoundError, ValueError, DatasetNotFoundError...)
        raise CorpusError(f"source {name!r}: cannot load {_where(spec)} split {split!r}: {e}") from e
    return ((f"{split}:{i}", dict(r)) for i, r in enumerate(dataset)), provenance


# --------------------------------------------------------------------------------------------
# The corpus file: jsonl of documents plus a manifest
# --------------------------------------------------------------------------------------------


def write_corpus(
    docs: list[dict], path: str | Path, source: str, spec: dict, provenance: CorpusProvenance,
) -> CorpusManifest:
    """Write the documents (jsonl) and their manifest (same name, .json; CorpusManifest) atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for doc in docs:
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    manifest = cast(CorpusManifest, {
        "source": source,
        "spec": spec,
        **provenance,
        "documents": len(docs),
        "chat": any("messages" in doc for doc in docs),
        "first_id": docs[0]["id"],
        "last_id": docs[-1]["id"],
        "sha256": sha256_file(path),
    })
    write_json(path.with_suffix(".json"), manifest)
    log.info("%s: %d documents -> %s", source, len(docs), path)
    return manifest


def read_corpus(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]
