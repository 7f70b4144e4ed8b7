"""Held-out text kept out of calibration text by content, not only by document id.

Two documents can hold the same text under different ids: a file read whole by one source and
string by string by another (the standard library's source and pydoc_data/topics.py), a licence
shipped by several distributions, a docstring copied into another class. The id-hash split of
calmix.calibration.installed cannot see that; this module can.

Texts are compared after :func:`normalise`. Its words are the runs of ASCII letters and non-ASCII
bytes of the text's UTF-8 encoding; every other byte (digits, punctuation, whitespace) separates
words. A normalised text is its words of two or more bytes, ASCII letters lowercased, joined by single
spaces. So quoting, escapes (``\\n`` inside a Python literal leaves a lone ``n``), numbering, line
wrapping and markup hide no copy.

A held-out text *overlaps* a calibration document when one of its windows occurs in the document's
normalised text, on word boundaries. The windows of a text are its runs of ``window`` words that
start at words 0, window, 2 x window, ... (the whole text when it has fewer words). So a held-out
text found whole in a document (identical to it, or inside it) always overlaps it, and so does one
that shares any run of 2 x window - 1 words with it; a shorter shared run (a common line of
boilerplate) may or may not. One pass of an Aho-Corasick automaton (pyahocorasick) over a document
finds every window of every held-out text at once, in time linear in the text read.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, NamedTuple

import ahocorasick

log = logging.getLogger(__name__)

#: Words in a window: 50 words are about 300 characters of English prose, or a few lines of code.
WINDOW = 50

#: Byte -> itself (a-z and non-ASCII), its lowercase (A-Z) or a space (every other byte).
_WORD_BYTES = bytes(c + 32 if 65 <= c <= 90 else c if 97 <= c <= 122 or c >= 128 else 32 for c in range(256))


def normalise(text: str) -> str:
    """The words of two or more bytes of ``text`` (see the module), lowercased, joined by single spaces."""
    words = text.encode("utf-8", "surrogatepass").translate(_WORD_BYTES).split()
    return b" ".join(w for w in words if len(w) > 1).decode("utf-8", "surrogatepass")


def document_text(doc: dict) -> str:
    """The text of a corpus document or task item: its text, or its chat messages' contents."""
    return doc["text"] if "text" in doc else "\n".join(m["content"] for m in doc["messages"])


def windows(normalised: str, window: int = WINDOW) -> list[str]:
    """The windows of a normalised text: runs of ``window`` words from words 0, window, ...; the
    whole text when it has fewer words; none when it has no word."""
    words = normalised.split(" ") if normalised else []
    if len(words) < window:
        return [normalised] if words else []
    return [" ".join(words[k:k + window]) for k in range(0, len(words) - window + 1, window)]


class Overlap(NamedTuple):
    """A held-out text ``found`` of whose ``windows`` windows occur in one calibration document;
    ``contained``: its whole normalised text does (it is identical to the document, or inside it)."""

    heldout: Hashable
    document: Hashable
    found: int
    windows: int
    contained: bool


class HeldoutIndex:
    """The windows of some held-out texts, to look for in calibration documents."""

    def __init__(self, texts: Mapping[Hashable, str], window: int = WINDOW) -> None:
        self.normalised = {key: normalise(text) for key, text in texts.items()}
        self.windows = {key: len(windows(n, window)) for key, n in self.normalised.items()}
        owners: dict[str, list[tuple[Hashable, int]]] = defaultdict(list)
        for key, n in self.normalised.items():
            for i, w in enumerate(windows(n, window)):
                owners[f" {w} "].append((key, i))  # padded: a window matches whole words only
        self._automaton = ahocorasick.Automaton()
        for pattern, owner in owners.items():
            self._automaton.add_word(pattern, owner)
        self._automaton.make_automaton()

    def overlaps(self, document: Hashable, text: str) -> list[Overlap]:
        """Every held-out text that overlaps one calibration document, in the index's order."""
        if not len(self._automaton):
            return []
        padded = f" {normalise(text)} "
        seen = {owner for _, owners in self._automaton.iter(padded) for owner in owners}
        found: dict[Hashable, int] = defaultdict(int)
        for key, _ in seen:
            found[key] += 1
        return [
            Overlap(key, document, found[key], self.windows[key],
                    found[key] == self.windows[key] and f" {self.normalised[key]} " in padded)
            for key in self.normalised if key in found
        ]


def overlaps(heldout: Mapping[Hashable, str], documents: Iterable[tuple[Hashable, str]],
             window: int = WINDOW) -> list[Overlap]:
    """Every (held-out text, calibration document) pair that overlaps, documents in the order given."""
    index = HeldoutIndex(heldout, window)
    return [o for key, text in documents for o in index.overlaps(key, text)]


class HeldoutOverlapError(ValueError):
    """Held-out text found in calibration text; the message names such items, where they are and what
    to do; ``overlaps`` lists every one: (task, item, source, Overlap)."""

    def __init__(self, message: str, overlaps: list[tuple[str, str, str, Overlap]]) -> None:
        super().__init__(message)
        self.overlaps = overlaps


#: Items an error message names one by one; it counts the rest.
_SHOWN = 10


def check_heldout(tasks: Mapping[str, list[dict]], sources: Iterable[tuple[str, list[dict]]],
                  window: int = WINDOW) -> dict[str, Any]:
    """Raise HeldoutOverlapError if an item of a held-out text task ({task: its items, each with
    ``text``}) overlaps a document of a calibration source ((name, its corpus documents), read one
    source at a time); else return what was checked: the window, items and windows per task,
    documents per source. An item is named by its ``id``, or by its position (lm-eval's doc_id)."""
    labels = {(task, i): str(item.get("id", f"doc_id {i}")) for task, items in tasks.items() for i, item in enumerate(items)}
    index = HeldoutIndex({key: document_text(tasks[key[0]][key[1]]) for key in labels}, window)
    found: dict[tuple[str, int], list[tuple[str, Overlap]]] = defaultdict(list)
    documents = {}
    for name, docs in sources:
        documents[name] = len(docs)
        for doc in docs:
            for o in index.overlaps(doc["id"], document_text(doc)):
                found[o.heldout].append((name, o))
    if found:
        items = sorted(found)
        every = [(task, labels[task, i], name, o) for task, i in items for name, o in found[task, i]]
        for task, label, name, o in every:
            log.error("task %s, item %r: %d of its %d windows in source %r, document %r%s", task, label, o.found,
                      o.windows, name, o.document, " (whole)" if o.contained else "")
        lines = [_where(task, labels[task, i], found[task, i]) for task, i in items]
        more = f"\n  ... and {len(lines) - _SHOWN} more items (the log lists every overlap)" if len(lines) > _SHOWN else ""
        raise HeldoutOverlapError(
            f"held-out text is in the calibration data: {len(lines)} items of held-out tasks overlap documents of "
            f"calibration sources (they share a run of {window} words, or the whole item, after "
            "calmix.calibration.contamination.normalise), so their perplexity would be measured on text the "
            "calibration sets contain:\n  " + "\n  ".join(lines[:_SHOWN]) + more + "\n"
            "Leave the items' files out of those sources (an installed source's 'exclude' globs, e.g. exclude: "
            "[pydoc_data/topics.py]), or draw the tasks' items from files no calibration source reads "
            "(metadata.calmix_items.sources of resources/lm_eval_tasks/<task>.yaml).",
            every,
        )
    return {
        "window": window,
        "tasks": {task: {"items": len(items), "windows": sum(index.windows[task, i] for i in range(len(items)))}
                  for task, items in tasks.items()},
        "sources": documents,
    }


def _where(task: str, label: str, found: list[tuple[str, Overlap]]) -> str:
    """One line of the error: the item, the document that holds most of it, and how many others."""
    name, o = max(found, key=lambda f: (f[1].contained, f[1].found))
    how = ("whole, inside" if o.contained else f"{o.found} of its {o.windows} windows in")
    others = f" (and {len(found) - 1} more documents)" if len(found) > 1 else ""
    return f"task {task}, item {label!r}: {how} source {name!r}, document {o.document!r}{others}"
