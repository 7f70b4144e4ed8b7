"""Calibration text every machine has offline, written by people outside this project: the files of
installed distributions (``packages: [sympy]``) and of the Python standard library (``python``).

A source names the distributions, the files (globs relative to the distribution's root, e.g.
``sympy/**/*.py``, ``*.dist-info/METADATA``; ``exclude``: globs of files to leave out) and how a file
becomes documents (``extract``):

* ``text``: the whole file is one document (source code, licences, manuals);
* ``docstrings``: every module, class and function docstring of a Python file;
* ``strings``: every string literal of a Python file (the documentation's prose in pydoc_data/topics.py);
* ``description``: the long description of a distribution's METADATA (its README);
* ``doctests``: the ``>>>`` examples of every docstring as a chat, the code asked by the user and the
  printed result answered by the assistant (rendered with the model's chat template);
* ``conversations``: the conversations of chatterbot-corpus YAML files as chats.

Held-out text is kept apart by one rule for every source and task: a document whose id hashes to
0 mod 10 (the first 8 bytes of the sha256 of ``<package>/<path>[:<where>]``, a big-endian integer) is held out (``part: heldout``), every other one is
calibration text (``part: calibration``, the default). The same text can stand under two ids (a
docstring copied into another class, a string of pydoc_data/topics.py inside a longer one), so a
held-out document that overlaps a calibration document of the same source by content
(calmix.calibration.contamination) is dropped: it is in neither part. What other sources read is
checked by the study (rule heldout_check). Documents are ordered by the same hash, so
``max_docs`` takes a spread over the files, not the first directory. The provenance records each
distribution's version and every read file's sha256.
"""

from __future__ import annotations

import ast
import doctest
import email
import hashlib
import importlib.metadata
import platform
import re
import sysconfig
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import yaml

from calmix.calibration.contamination import HeldoutIndex, document_text
from calmix.core.io import sha256_file
from calmix.core.records import CorpusProvenance

#: The package name that stands for the running interpreter's standard library.
STDLIB = "python"

#: Extracts whose documents are chats (lists of messages).
CHAT_EXTRACTS = ("doctests", "conversations")
EXTRACTS = ("text", "docstrings", "strings", "description", *CHAT_EXTRACTS)

#: One document in this many is held out (by the hash of its id).
HELDOUT_EVERY = 10

#: Documents shorter than this (characters) are dropped unless the source sets ``min_chars``.
MIN_CHARS = 64

_SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__"}


class InstalledSourceError(ValueError):
    """A package that is not installed, or files that match nothing; the message says which."""


def package_version(package: str) -> str:
    """The installed version of a distribution (the interpreter's version for ``python``)."""
    if package == STDLIB:
        return platform.python_version()
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise InstalledSourceError(
            f"package {package!r} is not installed; install it (pip install {package}) or name another"
        ) from None


@cache
def _package_files(package: str) -> tuple[Path, tuple[str, ...]]:
    """(root, every file's path relative to the root, sorted) of a distribution or the standard library."""
    if package == STDLIB:
        root = Path(sysconfig.get_paths()["stdlib"])
        files = (
            p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and not _SKIPPED_DIRS & set(p.relative_to(root).parts)
        )
        return root, tuple(sorted(files))
    package_version(package)
    dist = importlib.metadata.distribution(package)
    root = Path(dist.locate_file(""))
    files = (f.as_posix() for f in dist.files or () if "__pycache__" not in f.parts and not f.as_posix().startswith(".."))
    return root, tuple(sorted(files))


def _glob_regex(pattern: str) -> re.Pattern:
    """A path glob as a regex: ``**/`` any directories (or none), ``*`` and ``?`` within one name."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matched_files(package: str, patterns: list[str], exclude: list[str] = ()) -> tuple[Path, list[str]]:
    """(root, the distribution's files that match any of the globs and none of ``exclude``, sorted)."""
    root, files = _package_files(package)
    regexes, excluded = [_glob_regex(p) for p in patterns], [_glob_regex(p) for p in exclude]
    matched = [f for f in files if any(r.match(f) for r in regexes) and not any(r.match(f) for r in excluded)]
    inside = root.resolve()
    for rel in matched:
        resolved = (root / rel).resolve()
        if not resolved.is_relative_to(inside):
            raise InstalledSourceError(
                f"{package}: its file {rel!r} (as its installed file list names it) resolves to {resolved}, outside "
                f"{inside}; calmix reads no file outside a distribution or the standard library. Reinstall {package} "
                "from a trusted source"
            )
    return root, matched


def is_heldout(doc_id: str) -> bool:
    return _id_hash(doc_id) % HELDOUT_EVERY == 0


def _id_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big")


def load_installed(name: str, spec: dict) -> tuple[list[dict], CorpusProvenance]:
    """The documents of an ``installed`` source (its part, ordered by id hash) and their provenance."""
    extract, heldout = spec["extract"], spec.get("part", "calibration") == "heldout"
    min_chars = spec.get("min_chars", MIN_CHARS)
    docs: list[dict] = []
    calibration: list[dict] = []  # with part: heldout, the other part, whatever its length: what held-out text must not overlap
    files, versions, unreadable = [], {}, []
    for package in spec["packages"]:
        versions[package] = package_version(package)
        root, paths = matched_files(package, spec["files"], spec.get("exclude", []))
        if not paths:
            raise InstalledSourceError(
                f"source {name!r}: no file of {package} {versions[package]} (under {root}) matches {spec['files']}"
            )
        for rel in paths:
            path, file_id = root / rel, f"{package}/{rel}"
            try:
                text = path.read_text(encoding="utf-8")
                found = list(_EXTRACTORS[extract](text, file_id))
            except (UnicodeDecodeError, SyntaxError, ValueError, yaml.YAMLError):
                unreadable.append(file_id)  # not UTF-8, not Python 3 (lib2to3 fixtures), not YAML
                continue
            files.append({"path": file_id, "sha256": sha256_file(path)})
            for doc in found:
                if heldout != is_heldout(doc["id"]):
                    if heldout:
                        calibration.append(doc)
                elif _length(doc) >= min_chars:
                    docs.append(doc)
    if heldout:
        docs = _not_in(docs, calibration)
    docs.sort(key=lambda d: (_id_hash(d["id"]), d["id"]))
    provenance: CorpusProvenance = {"packages": versions, "files": files, "unreadable": unreadable}
    return docs, provenance


def _not_in(heldout: list[dict], calibration: list[dict]) -> list[dict]:
    """The held-out documents that overlap no calibration document (calmix.calibration.contamination)."""
    index = HeldoutIndex({d["id"]: document_text(d) for d in heldout})
    overlapping = {o.heldout for d in calibration for o in index.overlaps(d["id"], document_text(d))}
    return [d for d in heldout if d["id"] not in overlapping]


def _length(doc: dict) -> int:
    return len(doc["text"]) if "text" in doc else sum(len(m["content"]) for m in doc["messages"])


def _text(text: str, file_id: str) -> Iterator[dict]:
    if text.strip():
        yield {"id": file_id, "text": text.strip()}


def _docstring_nodes(text: str) -> Iterator[tuple[str, str]]:
    """(qualified name, cleaned docstring) of a module and every class and function in it."""
    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                qualname = f"{prefix}{child.name}"
                doc = ast.get_docstring(child)
                if doc:
                    yield f"{qualname}@{child.lineno}", doc
                yield from walk(child, qualname + ".")

    module = ast.parse(text)
    doc = ast.get_docstring(module)
    if doc:
        yield "<module>", doc
    yield from walk(module, "")


def _docstrings(text: str, file_id: str) -> Iterator[dict]:
    for where, doc in _docstring_nodes(text):
        yield {"id": f"{file_id}:{where}", "text": doc}


def _strings(text: str, file_id: str) -> Iterator[dict]:
    tree = ast.parse(text)
    # the literal pieces of an f-string carry the f-string's position, so they would share its id
    in_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip()
                and id(node) not in in_fstrings):
            yield {"id": f"{file_id}:{node.lineno}:{node.col_offset}", "text": node.value.strip()}


def _description(text: str, file_id: str) -> Iterator[dict]:
    message = email.message_from_string(text)
    body = message.get_payload() or message.get("Description") or ""
    if isinstance(body, str) and body.strip():
        yield {"id": file_id, "text": body.strip()}


def _doctests(text: str, file_id: str) -> Iterator[dict]:
    parser = doctest.DocTestParser()
    for where, doc in _docstring_nodes(text):
        messages = []
        for example in parser.get_examples(doc):
            if example.want.strip():
                messages.append({"role": "user", "content": example.source.strip()})
                messages.append({"role": "assistant", "content": example.want.strip()})
        if messages:
            yield {"id": f"{file_id}:{where}", "messages": messages}


def _conversations(text: str, file_id: str) -> Iterator[dict]:
    data = yaml.safe_load(text) or {}
    for i, turns in enumerate(data.get("conversations") or []):
        turns = [t.strip() for t in turns if isinstance(t, str) and t.strip()]
        if len(turns) >= 2:
            roles = ["user", "assistant"] * len(turns)
            yield {"id": f"{file_id}:{i}", "messages": [{"role": r, "content": t} for r, t in zip(roles, turns)]}


#: The files each extract reads as intended (a suffix, or a whole file name); text reads any file. Another
#: file would give something else: ``description`` on a .py file gives the whole file as one document.
EXTRACT_FILES = {"docstrings": (".py",), "strings": (".py",), "doctests": (".py",), "description": ("METADATA", "PKG-INFO"),
                 "conversations": (".yml", ".yaml")}


def misfits(extract: str, files: list[str]) -> list[str]:
    """The files (relative paths) that ``extract`` does not read as intended."""
    fits = EXTRACT_FILES.get(extract)
    return [] if fits is None else [f for f in files if not (f.endswith(fits) or f.rsplit("/", 1)[-1] in fits)]


_EXTRACTORS = {
    "text": _text, "docstrings": _docstrings, "strings": _strings, "description": _description,
    "doctests": _doctests, "conversations": _conversations,
}
