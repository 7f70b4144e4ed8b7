"""Held-out text against calibration text by content (calmix.calibration.contamination): the
normalisation and the overlap criterion against a brute-force oracle (plain substring search over
small synthetic documents), the guarantee on shared runs, the check's error and record, the escaped
literals of pydoc_data/topics.py, and the world's held-out text."""

import random
import re
import sysconfig
from pathlib import Path

import pytest
import yaml

from calmix.calibration.contamination import (
    WINDOW, HeldoutIndex, HeldoutOverlapError, Overlap, check_heldout, document_text, normalise, overlaps, windows,
)
from calmix.calibration.corpora import load_documents
from calmix.calibration.installed import load_installed
from calmix.evaluation.tasks import heldout_text_tasks
from calmix.world.domain import World

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# The oracle: the same definitions written another way, and plain substring search
# --------------------------------------------------------------------------------------------


def oracle_normalise(text: str) -> str:
    words = re.findall(rb"[A-Za-z\x80-\xff]{2,}", text.encode("utf-8"))
    return b" ".join(words).lower().decode("utf-8")


def oracle_overlaps(heldout: dict, documents: list[tuple], window: int) -> list[Overlap]:
    out = []
    for doc_key, doc_text in documents:
        d = f" {oracle_normalise(doc_text)} "
        for key, text in heldout.items():
            words = oracle_normalise(text).split()
            starts = range(0, len(words) - window + 1, window) if len(words) >= window else [0] if words else []
            spans = [words[s:s + window] for s in starts]
            found = sum(f" {' '.join(span)} " in d for span in spans)
            if found:
                out.append(Overlap(key, doc_key, found, len(spans), f" {' '.join(words)} " in d))
    return out


def test_normalise_keeps_words_of_two_or_more_letters_lowercased():
    assert normalise("The \"if\" statement\\n' 'is used: x = 1;\tIF-else  42 Ünïcode") == "the if statement is used if else Ünïcode"
    assert normalise("a 1 ! ?") == "" and windows("") == []
    rng = random.Random(0)
    alphabet = "aAbZ \n\t'\"\\-_0189.,é€ü"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(60)))
        assert normalise(text) == oracle_normalise(text), repr(text)


def test_windows_start_every_window_words_and_a_short_text_is_one():
    words = [f"w{chr(97 + i)}" for i in range(11)]
    text = " ".join(words)
    assert windows(text, 4) == [" ".join(words[0:4]), " ".join(words[4:8])]
    assert windows(" ".join(words[:3]), 4) == [" ".join(words[:3])]


def _synthetic(rng: random.Random, n_heldout: int, n_docs: int) -> tuple[dict, list[tuple]]:
    """Held-out texts and documents over a small vocabulary, the documents made partly of pieces of
    held-out texts (whole, runs of words, runs with their punctuation changed), so that every case occurs."""
    vocab = ["ab", "cd", "Ef", "gh", "ij", "x", "7", "é", "no"]

    def words(n: int) -> list[str]:
        return [rng.choice(vocab) for _ in range(n)]

    heldout = {f"h{i}": rng.choice([" ", "\n", ", "]).join(words(rng.randrange(1, 14))) for i in range(n_heldout)}
    documents = []
    for j in range(n_docs):
        pieces = [" ".join(words(rng.randrange(0, 8)))]
        for _ in range(rng.randrange(3)):
            source = rng.choice(list(heldout.values())).split()
            a = rng.randrange(len(source))
            piece = source[a:a + rng.randrange(1, 12)]
            pieces.append(rng.choice([" ", "\\n' '", "; "]).join(piece))
            pieces.append(" ".join(words(rng.randrange(0, 4))))
        documents.append((f"d{j}", " ".join(pieces)))
    return heldout, documents


@pytest.mark.parametrize("window", [1, 2, 3, 5])
def test_overlaps_are_those_plain_substring_search_finds(window):
    rng = random.Random(window)
    checked = 0
    for _ in range(40):
        heldout, documents = _synthetic(rng, 6, 8)
        got = overlaps(heldout, documents, window)
        assert got == oracle_overlaps(heldout, documents, window)
        checked += len(got)
    assert checked > 50  # the cases are not all empty


def test_every_run_of_2w_minus_1_shared_words_and_every_contained_text_is_found():
    rng = random.Random(7)
    window = 3
    for _ in range(200):
        heldout, documents = _synthetic(rng, 4, 4)
        found = {(o.heldout, o.document) for o in overlaps(heldout, documents, window)}
        for key, text in heldout.items():
            h = oracle_normalise(text).split()
            for doc_key, doc_text in documents:
                d = f" {oracle_normalise(doc_text)} "
                shared = any(f" {' '.join(h[i:i + 2 * window - 1])} " in d for i in range(len(h) - 2 * window + 2))
                if h and (f" {' '.join(h)} " in d or shared):
                    assert (key, doc_key) in found, (text, doc_text)


def test_the_index_reads_chats_and_names_contained_texts():
    index = HeldoutIndex({"a": "One two three four five six."}, window=2)
    chat = {"id": "c", "messages": [{"role": "user", "content": "zero one two"}, {"role": "assistant", "content": "three four five six seven"}]}
    assert index.overlaps("c", document_text(chat)) == [Overlap("a", "c", 3, 3, True)]
    assert index.overlaps("d", "one two, and three four") == [Overlap("a", "d", 2, 3, False)]
    assert index.overlaps("e", "onetwo three") == []  # whole words only


# --------------------------------------------------------------------------------------------
# The study's check
# --------------------------------------------------------------------------------------------


def test_check_names_the_task_the_item_the_source_the_document_and_what_to_do():
    prose = "The quick brown fox jumps over the lazy dog. " * 20
    tasks = {"heldout_prose": [{"id": "pkg/a.txt", "text": prose}, {"text": "nothing like it anywhere here at all"}],
             "heldout_code": [{"id": "pkg/b.py", "text": "def unique_function_name(): return something_else"}]}
    sources = [("clean", [{"id": "c0", "text": "other words entirely"}]),
               ("readmes", [{"id": "pkg/README", "text": "Intro. " + prose + " Outro."}]),
               ("chat", [{"id": "conv:1", "messages": [{"role": "user", "content": "nothing like it"},
                                                       {"role": "assistant", "content": "anywhere here at all"}]}])]
    with pytest.raises(HeldoutOverlapError) as err:
        check_heldout(tasks, iter(sources))
    message = str(err.value)
    assert "task heldout_prose, item 'pkg/a.txt': whole, inside source 'readmes', document 'pkg/README'" in message
    assert "task heldout_prose, item 'doc_id 1': whole, inside source 'chat', document 'conv:1'" in message  # by position
    assert "heldout_code" not in message and "exclude" in message and "metadata.calmix_items.sources" in message
    assert [(task, label, source, o.document) for task, label, source, o in err.value.overlaps] == [
        ("heldout_prose", "pkg/a.txt", "readmes", "pkg/README"), ("heldout_prose", "doc_id 1", "chat", "conv:1")]
    record = check_heldout({"heldout_code": tasks["heldout_code"]}, iter(sources))
    assert record == {"window": WINDOW, "tasks": {"heldout_code": {"items": 1, "windows": 1}},
                      "sources": {"clean": 1, "readmes": 1, "chat": 1}}


def test_the_held_out_text_tasks_are_calmix_perplexity_tasks():
    tasks = ["heldout_prose", "heldout_code", "heldout_math", "world_perplexity", "world_general", "humaneval_choice", "wikitext"]
    assert heldout_text_tasks(tasks) == ["heldout_prose", "heldout_code", "heldout_math", "world_perplexity"]


def test_the_documentation_prose_is_found_inside_the_escaped_literals_of_topics_py():
    """pydoc_data/topics.py writes each topic as adjacent literals with escapes ('...debugging '
    'assertions\\n'): read whole (a text extract), it holds every topic's prose, and the check sees it."""
    spec = {"kind": "installed", "packages": ["python"], "files": ["pydoc_data/topics.py"], "min_chars": 1}
    strings, _ = load_installed("s", {**spec, "extract": "strings"})
    held, _ = load_installed("s", {**spec, "extract": "strings", "part": "heldout"})
    source = (Path(sysconfig.get_paths()["stdlib"]) / "pydoc_data" / "topics.py").read_text(encoding="utf-8")
    assert all(d["text"] not in source for d in strings if "\n" in d["text"])  # not there as plain text
    long = {d["id"]: d["text"] for d in strings + held if len(normalise(d["text"]).split()) >= WINDOW}
    assert len(long) > 50
    found = overlaps(long, [("python/pydoc_data/topics.py", source)])
    assert {o.heldout for o in found if o.contained} == set(long)


@pytest.mark.parametrize("config", ["config.yaml", "experiments/world-tiny.yaml"])
def test_the_worlds_held_out_text_is_in_no_world_source(config):
    study = yaml.safe_load((REPO / config).read_text())
    world = study.get("world", {})
    items = World(world.get("seed", 0)).eval_items("world_perplexity", world.get("eval_items", 200), seed=0)
    sources = ((name, load_documents(name, spec, world.get("seed", 0))[0]) for name, spec in study["calibration"]["sources"].items())
    record = check_heldout({"world_perplexity": items}, sources)
    assert record["tasks"]["world_perplexity"]["items"] == len(items) > 0
