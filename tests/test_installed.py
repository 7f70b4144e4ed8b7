"""Calibration sources of kind 'installed': a synthetic distribution on sys.path (every extract, the
globs and exclusions, the provenance, the held-out split by id hash and by content, and the order by
id hash), the standard library, the config check's errors for packages and globs, and the real-model
studies' held-out text, in none of their calibration sources."""

import hashlib
import json
import platform
import re
import sysconfig
from pathlib import Path

import pytest

from calmix.calibration import installed
from calmix.calibration.corpora import CorpusError, load_documents, read_corpus, write_corpus
from calmix.calibration.installed import InstalledSourceError, is_heldout, load_installed, matched_files
from calmix.config import ConfigError, read_config_file, validate_config
from calmix.evaluation.offline import build_items
from calmix.evaluation.tasks import items_spec

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "experiments" / "world-tiny.yaml"

PKG = "fakepkg"
VERSION = "1.2.3"

INIT = '''"""Fakepkg: a synthetic distribution that the tests read as installed calibration text."""

GREETING = "A long string literal that is not a docstring, kept by the strings extract."
SHORT = "hi"


class Widget:
    """A widget: the class docstring, several words long so that it passes any length filter."""

    def method(self):
        """The method docstring of Widget.method, also long enough to keep it."""

        def inner():
            """Nested in a method."""

        return inner


def add(a, b):
    """Add two numbers.

    >>> x = 1
    >>> 1 + 1
    2
    >>> add(2, 3)
    5
    """
    return a + b


def undocumented():
    return "no docstring here"
'''

DEEP = '"""The module docstring of a module two folders down: fakepkg/sub/deep/mod.py."""\n'
SINGLE = '"""The module docstring of a module whose name is a single letter."""\n'
FSTRINGS = 'NAME = "calmix"\nMESSAGE = f"the first piece of an f-string {NAME} and the second piece of it"\n'
MANY = 60  # functions in many.py: enough that both parts (held out and calibration) are non-empty


def _many_source() -> str:
    # each docstring has a word of its own ('aa', 'ab', ...): held-out text is told apart from calibration
    # text by its words, and digits are no words (calmix.calibration.contamination)
    return "".join(f'def f{i}():\n    """Docstring number {i}, {chr(97 + i // 26)}{chr(97 + i % 26)}.\n    Line two of {i}.\n'
                   f'    Line three of {i}.\n    """\n\n\n' for i in range(MANY))


README = "Fakepkg\n=======\n\n" + "".join(f"Paragraph {i} of the read-me of a package that does not exist.\n" for i in range(5))

DESCRIPTION = ("Fakepkg\n=======\n\nThe long description of fakepkg, as a README rendered into METADATA.\n\n"
               "It has several lines, so that the description extract gives one long document.\n")

METADATA = f"Metadata-Version: 2.1\nName: {PKG}\nVersion: {VERSION}\nSummary: a package that does not exist\n\n{DESCRIPTION}"

CHAT = """categories:
- greetings
conversations:
- - Hello there
  - Hi! How are you doing today?
  - I am fine, thanks for asking.
- - What is your name?
  - My name is Fakebot.
- - A conversation of one turn is no chat
"""

FILES = {
    "fakepkg/__init__.py": INIT,
    "fakepkg/a.py": SINGLE,
    "fakepkg/many.py": _many_source(),
    "fakepkg/fstrings.py": FSTRINGS,
    "fakepkg/sub/deep/mod.py": DEEP,
    "fakepkg/broken.py": "def broken(:\n    pass\n",
    "fakepkg/README.txt": README,
    "fakepkg/data/chat.yml": CHAT,
    "fakepkg/data/chat_yml": "conversations:\n- - not matched by 'chat.yml'\n  - the dot is literal\n",
    f"fakepkg-{VERSION}.dist-info/METADATA": METADATA,
}
LATIN = "fakepkg/latin.py"  # not UTF-8
RECORD = f"fakepkg-{VERSION}.dist-info/RECORD"
NOT_FILES = ["fakepkg/__pycache__/__init__.cpython-311.pyc", "../../bin/fakepkg-cli"]  # listed, never matched
PY_FILES = sorted([*(f for f in FILES if f.endswith(".py")), LATIN])


@pytest.fixture
def fakepkg(tmp_path, monkeypatch):
    """The distribution fakepkg 1.2.3 installed in tmp_path (on sys.path); returns tmp_path."""
    for rel, text in FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    (tmp_path / LATIN).write_bytes(b'"""Caf\xe9 cr\xe8me: Latin-1 bytes, not UTF-8, in a module docstring."""\n')
    listed = [*FILES, LATIN, RECORD, *NOT_FILES]
    (tmp_path / RECORD).write_text("".join(f"{rel},,\n" for rel in listed))
    monkeypatch.syspath_prepend(str(tmp_path))
    installed._package_files.cache_clear()
    yield tmp_path
    installed._package_files.cache_clear()


def _spec(extract, files, **more):
    return {"kind": "installed", "packages": [PKG], "files": files, "extract": extract, **more}


def _both_parts(spec):
    calibration, _ = load_installed("s", {**spec, "part": "calibration"})
    heldout, _ = load_installed("s", {**spec, "part": "heldout"})
    return calibration + heldout


def _line(source: str, text: str) -> int:
    """1-based number of the line of source that holds text."""
    return next(i for i, line in enumerate(source.splitlines(), 1) if text in line)


def _hash_prefix(doc_id: str) -> str:
    return hashlib.sha256(doc_id.encode()).hexdigest()[:16]  # the first 8 bytes, as hex (same order as the number)


def _heldout(doc_id: str) -> bool:
    return int(_hash_prefix(doc_id), 16) % 10 == 0


def test_globs_match_folders_with_double_star_and_names_with_single_star(fakepkg):
    def match(*patterns):
        root, found = matched_files(PKG, list(patterns))
        assert root == fakepkg
        return found

    every_py = sorted(f for f in PY_FILES if f.startswith("fakepkg/"))
    assert match("fakepkg/**/*.py") == every_py  # '**/' is zero folders too: fakepkg/__init__.py
    assert match("fakepkg/*.py") == [f for f in every_py if f.count("/") == 1]  # '*' never crosses '/'
    assert match("**/mod.py") == match("fakepkg/**/deep/*.py") == match("fakepkg/sub/**/*.py") == ["fakepkg/sub/deep/mod.py"]
    assert match("*.py") == [] and match("fakepkg/sub/*.py") == []
    assert match("fakepkg/?.py") == ["fakepkg/a.py"]
    assert match("fakepkg/data/chat.yml") == ["fakepkg/data/chat.yml"]  # '.' is literal
    assert match("*.dist-info/METADATA") == [f"fakepkg-{VERSION}.dist-info/METADATA"]
    assert match("fakepkg/*.py", "**/mod.py") == sorted([*match("fakepkg/*.py"), "fakepkg/sub/deep/mod.py"])
    everything = match("**/*")
    assert everything == sorted([*FILES, LATIN, RECORD])  # neither __pycache__ nor paths outside the root


def test_text_extract_is_the_whole_file(fakepkg):
    docs, provenance = load_installed("s", _spec("text", ["fakepkg/README.txt"], min_chars=1, part="calibration"))
    held, _ = load_installed("s", _spec("text", ["fakepkg/README.txt"], min_chars=1, part="heldout"))
    both = docs + held
    assert both == [{"id": "fakepkg/fakepkg/README.txt", "text": README.strip()}]
    assert provenance["packages"] == {PKG: VERSION}


def test_docstrings_extract_every_module_class_and_function_docstring(fakepkg):
    docs = _both_parts(_spec("docstrings", ["fakepkg/__init__.py"], min_chars=1))
    base = "fakepkg/fakepkg/__init__.py"
    want = {
        f"{base}:<module>": "Fakepkg: a synthetic distribution that the tests read as installed calibration text.",
        f"{base}:Widget@{_line(INIT, 'class Widget')}":
            "A widget: the class docstring, several words long so that it passes any length filter.",
        f"{base}:Widget.method@{_line(INIT, 'def method')}": "The method docstring of Widget.method, also long enough to keep it.",
        f"{base}:Widget.method.inner@{_line(INIT, 'def inner')}": "Nested in a method.",
        f"{base}:add@{_line(INIT, 'def add')}": "Add two numbers.\n\n>>> x = 1\n>>> 1 + 1\n2\n>>> add(2, 3)\n5",
    }
    assert {d["id"]: d["text"] for d in docs} == want  # 'undocumented' gives nothing
    assert len(docs) == len(want)


def test_min_chars_drops_short_documents(fakepkg):
    spec = _spec("docstrings", ["fakepkg/__init__.py"])
    every = _both_parts({**spec, "min_chars": 1})
    kept = _both_parts(spec)  # default: 64 characters
    assert sorted(d["id"] for d in kept) == sorted(d["id"] for d in every if len(d["text"]) >= 64)
    assert any(len(d["text"]) < 64 for d in every) and kept
    assert _both_parts({**spec, "min_chars": 10_000}) == []


def test_strings_extract_every_literal_where_it_starts(fakepkg):
    docs = _both_parts(_spec("strings", ["fakepkg/__init__.py"], min_chars=1))
    by_id = {d["id"]: d["text"] for d in docs}
    line = _line(INIT, "GREETING =")
    column = INIT.splitlines()[line - 1].index('"')
    assert by_id[f"fakepkg/fakepkg/__init__.py:{line}:{column}"] == "A long string literal that is not a docstring, kept by the strings extract."
    assert by_id["fakepkg/fakepkg/__init__.py:1:0"].startswith("Fakepkg: a synthetic distribution")  # docstrings are literals
    assert "hi" in by_id.values() and "no docstring here" in by_id.values()


def test_strings_extract_gives_each_document_its_own_id(fakepkg):
    """Document ids name one document each (shards and manifests name documents by id): an f-string's
    pieces must not become two documents of the same id."""
    docs = _both_parts(_spec("strings", ["fakepkg/fstrings.py"], min_chars=1))
    ids = [d["id"] for d in docs]
    assert "calmix" in [d["text"] for d in docs]
    assert len(ids) == len(set(ids)), sorted(ids)


def test_description_extract_is_the_metadata_body(fakepkg):
    docs = _both_parts(_spec("description", ["*.dist-info/METADATA"], min_chars=1))
    assert docs == [{"id": f"fakepkg/fakepkg-{VERSION}.dist-info/METADATA", "text": DESCRIPTION.strip()}]


def test_doctests_extract_gives_chats_of_code_and_output(fakepkg):
    docs = _both_parts(_spec("doctests", ["fakepkg/__init__.py"], min_chars=1))
    assert docs == [{
        "id": f"fakepkg/fakepkg/__init__.py:add@{_line(INIT, 'def add')}",
        "messages": [  # '>>> x = 1' prints nothing and is left out
            {"role": "user", "content": "1 + 1"}, {"role": "assistant", "content": "2"},
            {"role": "user", "content": "add(2, 3)"}, {"role": "assistant", "content": "5"},
        ],
    }]


def test_conversations_extract_gives_alternating_chats(fakepkg):
    docs = _both_parts(_spec("conversations", ["fakepkg/data/*.yml"], min_chars=1))
    by_id = {d["id"]: d["messages"] for d in docs}
    assert sorted(by_id) == ["fakepkg/fakepkg/data/chat.yml:0", "fakepkg/fakepkg/data/chat.yml:1"]  # one turn is no chat
    first = by_id["fakepkg/fakepkg/data/chat.yml:0"]
    assert [m["content"] for m in first] == ["Hello there", "Hi! How are you doing today?", "I am fine, thanks for asking."]
    for messages in by_id.values():
        assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"][: len(messages)]


def test_provenance_names_the_version_every_read_file_and_the_unreadable(fakepkg):
    _, provenance = load_installed("s", _spec("docstrings", ["fakepkg/**/*.py"], min_chars=1))
    assert provenance["packages"] == {PKG: VERSION}
    assert provenance["unreadable"] == ["fakepkg/fakepkg/broken.py", "fakepkg/fakepkg/latin.py"]  # SyntaxError, not UTF-8
    read = [f for f in PY_FILES if f not in ("fakepkg/broken.py", LATIN)]
    assert [f["path"] for f in provenance["files"]] == [f"{PKG}/{rel}" for rel in read]
    for entry, rel in zip(provenance["files"], read):
        assert entry["sha256"] == hashlib.sha256((fakepkg / rel).read_bytes()).hexdigest()
    # as text, the file with a syntax error is readable; the Latin-1 one still is not
    _, provenance = load_installed("s", _spec("text", ["fakepkg/**/*.py"], min_chars=1))
    assert provenance["unreadable"] == ["fakepkg/fakepkg/latin.py"]
    assert "fakepkg/fakepkg/broken.py" in [f["path"] for f in provenance["files"]]


def test_heldout_and_calibration_parts_split_every_document_by_id_hash(fakepkg):
    spec = _spec("docstrings", ["fakepkg/many.py"], min_chars=1)
    calibration, _ = load_installed("s", spec)  # part: calibration is the default
    heldout, _ = load_installed("s", {**spec, "part": "heldout"})
    source = _many_source()
    every = {f"fakepkg/fakepkg/many.py:f{i}@{_line(source, f'def f{i}(')}" for i in range(MANY)}
    cal_ids, held_ids = [d["id"] for d in calibration], [d["id"] for d in heldout]
    assert set(cal_ids) | set(held_ids) == every and not set(cal_ids) & set(held_ids)
    assert len(cal_ids) + len(held_ids) == MANY
    assert set(held_ids) == {i for i in every if _heldout(i)} and held_ids and cal_ids
    assert all(is_heldout(i) for i in held_ids) and not any(is_heldout(i) for i in cal_ids)


def test_a_heldout_document_with_the_text_of_a_calibration_document_is_in_neither_part(fakepkg):
    """The same text under another id (a docstring copied into other functions) is calibration text."""
    copied = "A docstring copied into every function of this module, word for word; only the digits differ: "
    source = "".join(f'def g{i}():\n    """{copied}{i}."""\n\n\n' for i in range(40))
    (fakepkg / "fakepkg/copies.py").write_text(source, encoding="utf-8")
    with open(fakepkg / RECORD, "a") as f:
        f.write("fakepkg/copies.py,,\n")
    installed._package_files.cache_clear()
    spec = _spec("docstrings", ["fakepkg/copies.py", "fakepkg/many.py"], min_chars=1)
    copies = {f"fakepkg/fakepkg/copies.py:g{i}@{_line(source, f'def g{i}(')}" for i in range(40)}
    assert any(_heldout(i) for i in copies) and not all(_heldout(i) for i in copies)
    calibration, _ = load_installed("s", spec)
    heldout, _ = load_installed("s", {**spec, "part": "heldout"})
    assert {d["id"] for d in calibration} & copies == {i for i in copies if not _heldout(i)}
    assert not {d["id"] for d in heldout} & copies
    assert {d["id"] for d in heldout} == {d["id"] for d in load_installed("s", {**spec, "files": ["fakepkg/many.py"], "part": "heldout"})[0]}


def test_exclude_leaves_out_the_files_it_matches(fakepkg):
    every = matched_files(PKG, ["fakepkg/**/*.py"])[1]
    kept = matched_files(PKG, ["fakepkg/**/*.py"], ["fakepkg/sub/**/*.py", "fakepkg/a.py"])[1]
    assert kept == [f for f in every if f not in ("fakepkg/sub/deep/mod.py", "fakepkg/a.py")] and kept != every
    docs, provenance = load_installed("s", _spec("text", ["fakepkg/**/*.py"], exclude=["fakepkg/sub/**/*.py", "fakepkg/a.py"]))
    read = [f["path"] for f in provenance["files"]]
    assert "fakepkg/fakepkg/a.py" not in read and "fakepkg/fakepkg/sub/deep/mod.py" not in read and "fakepkg/fakepkg/many.py" in read
    assert not [d for d in docs if d["id"] in ("fakepkg/fakepkg/a.py", "fakepkg/fakepkg/sub/deep/mod.py")]


def test_documents_are_ordered_by_id_hash_and_max_docs_takes_the_first(fakepkg):
    spec = _spec("docstrings", ["fakepkg/**/*.py"], min_chars=1)
    docs, _ = load_installed("s", spec)
    ids = [d["id"] for d in docs]
    assert ids == sorted(ids, key=lambda i: (_hash_prefix(i), i))
    first, _ = load_documents("s", {**spec, "max_docs": 7})
    assert first == docs[:7]
    again, _ = load_documents("s", spec)
    assert again == docs


def test_corpus_manifest_says_chat_for_chat_extracts(fakepkg, tmp_path):
    chat_id = f"fakepkg/fakepkg/__init__.py:add@{_line(INIT, 'def add')}"
    for extract, files, chat in [("doctests", ["fakepkg/__init__.py"], True), ("docstrings", ["fakepkg/many.py"], False)]:
        part = "heldout" if chat and _heldout(chat_id) else "calibration"
        spec = _spec(extract, files, min_chars=1, part=part)
        docs, provenance = load_documents("s", spec)
        path = tmp_path / "corpora" / f"{extract}.jsonl"
        manifest = write_corpus(docs, path, "s", spec, provenance)
        assert manifest["chat"] is chat and manifest["documents"] == len(docs)
        assert manifest["packages"] == {PKG: VERSION} and manifest["files"] == provenance["files"]
        assert read_corpus(path) == docs
        assert json.loads(path.with_suffix(".json").read_text())["chat"] is chat


def test_errors_name_the_package_or_the_globs(fakepkg):
    with pytest.raises(InstalledSourceError, match="'calmix-no-such-dist' is not installed"):
        load_installed("s", {**_spec("text", ["*"]), "packages": ["calmix-no-such-dist"]})
    with pytest.raises(InstalledSourceError, match=r"no file of fakepkg 1\.2\.3 .* matches \['fakepkg/\*\*/\*\.rst'\]"):
        load_installed("s", _spec("text", ["fakepkg/**/*.rst"]))
    with pytest.raises(InstalledSourceError, match="not installed"):
        load_documents("s", {**_spec("text", ["*"]), "packages": ["calmix-no-such-dist"]})
    with pytest.raises(CorpusError, match="give no calibration documents"):
        load_documents("s", _spec("docstrings", ["fakepkg/__init__.py"], min_chars=10_000))


def test_stdlib_is_the_package_python():
    spec = {"kind": "installed", "packages": ["python"], "files": ["json/*.py"], "extract": "docstrings", "min_chars": 1}
    docs, provenance = load_documents("s", spec)
    assert provenance["packages"] == {"python": platform.python_version()}
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    want = sorted(p.name for p in (stdlib / "json").glob("*.py"))
    assert [f["path"] for f in provenance["files"]] == [f"python/json/{n}" for n in want]
    for entry in provenance["files"]:
        assert entry["sha256"] == hashlib.sha256((stdlib / entry["path"].removeprefix("python/")).read_bytes()).hexdigest()
    assert docs and all(d["id"].startswith("python/json/") for d in docs)
    assert any(d["id"] == "python/json/__init__.py:<module>" for d in docs + load_installed("s", {**spec, "part": "heldout"})[0])


def test_stdlib_never_reads_site_packages():
    root, files = matched_files("python", ["**/*"])
    assert root == Path(sysconfig.get_paths()["stdlib"])
    assert files and "json/__init__.py" in files
    assert not [f for f in files if {"site-packages", "dist-packages", "__pycache__"} & set(f.split("/"))]
    assert matched_files("python", ["site-packages/**/*"])[1] == []


# --------------------------------------------------------------------------------------------
# The config check
# --------------------------------------------------------------------------------------------


def _tiny_with(source: dict) -> dict:
    config = read_config_file(TINY)
    config["calibration"]["sources"]["x"] = source
    return config


@pytest.mark.parametrize("source, key, words", [
    ({"kind": "installed", "packages": ["calmix-no-such-dist"], "files": ["*"], "extract": "text"},
     "calibration.sources.x.packages", "'calmix-no-such-dist' is not installed"),
    ({"kind": "installed", "packages": ["python", "calmix-no-such-dist"], "files": ["json/*.py"], "extract": "text"},
     "calibration.sources.x.packages", "'calmix-no-such-dist' is not installed"),
    ({"kind": "installed", "packages": ["python"], "files": ["json/*.py", "no_such_folder/**/*.py"], "extract": "text"},
     "calibration.sources.x.files", "'no_such_folder/**/*.py' matches no file of python"),
    ({"kind": "installed", "packages": ["python"], "files": ["json/*.py"], "extract": "text", "template": "{text}"},
     "calibration.sources.x.template", "does not read 'template'"),
    ({"kind": "installed", "packages": ["python"], "files": ["json/*.py"]}, "calibration.sources.x.extract", "required"),
    ({"kind": "installed", "packages": ["python"], "files": ["json/*.py"], "exclude": ["json/decoder.py", "json/no_such.py"], "extract": "text"},
     "calibration.sources.x.exclude[1]", "'json/no_such.py' leaves out no file that 'files' matches in python"),
    ({"kind": "installed", "packages": ["python"], "files": ["json/*.py"], "exclude": ["json/*"], "extract": "text"},
     "calibration.sources.x.exclude", "leaves out every file of python that 'files' matches"),
    # valid in form, wrong for the data (issue 27)
    ({"kind": "installed", "packages": ["python"], "files": ["json/*.py"], "extract": "text", "part": "heldout"},
     "calibration.sources.x.part", "'heldout' is the held-out part that the held-out text tasks score"),
    ({"kind": "installed", "packages": ["python", "python"], "files": ["json/*.py"], "extract": "text"},
     "calibration.sources.x.packages[1]", "'python' is the distribution packages[0] already names"),
    ({"kind": "installed", "packages": ["PyYAML", "pyyaml"], "files": ["yaml/*.py"], "extract": "text"},
     "calibration.sources.x.packages[1]", "'pyyaml' is the distribution packages[0] already names ('PyYAML')"),
    ({"kind": "installed", "packages": ["python"], "files": ["json/*.py"], "extract": "description"},
     "calibration.sources.x.extract", "'description' reads METADATA or PKG-INFO files, and 'files' matches 5 other file(s) of python (json/__init__.py"),
    ({"kind": "installed", "packages": ["python"], "files": ["pydoc_data/*"], "extract": "docstrings"},
     "calibration.sources.x.extract", "'docstrings' reads .py files, and 'files' matches 1 other file(s) of python (pydoc_data/_pydoc.css)"),
    ({"kind": "installed", "packages": ["chatterbot-corpus"], "files": ["chatterbot_corpus/**/*"], "extract": "conversations"},
     "calibration.sources.x.extract", "'conversations' reads .yml or .yaml files"),
])
def test_config_check_names_the_key(tmp_path, source, key, words):
    with pytest.raises(ConfigError) as err:
        validate_config(_tiny_with(source), workdir=tmp_path)
    message = str(err.value)
    assert message.startswith(f"config key '{key}': "), message
    assert words in message, message


def test_config_check_reads_globs_of_any_named_package(fakepkg, tmp_path):
    source = {"kind": "installed", "packages": ["python", PKG], "files": ["json/*.py", "fakepkg/**/*.py"], "extract": "docstrings"}
    validate_config(_tiny_with(source), workdir=tmp_path)  # each glob matches a file of one of the packages
    with pytest.raises(ConfigError, match=r"^config key 'calibration.sources.x.files': 'fakepkg/\*\.rst' matches no file of python, fakepkg"):
        validate_config(_tiny_with({**source, "files": ["fakepkg/*.rst"]}), workdir=tmp_path)
    # the corpus reads every package it is given, so each must give a file
    with pytest.raises(ConfigError, match=r"^config key 'calibration.sources.x.packages\[1\]': no file of fakepkg matches \['json/\*.py'\]"):
        validate_config(_tiny_with({**source, "files": ["json/*.py"]}), workdir=tmp_path)


# --------------------------------------------------------------------------------------------
# The real-model studies: no held-out text in any calibration source
# --------------------------------------------------------------------------------------------

#: The licences heldout_prose read until issue 26 (near-copies of the licences the real study calibrates on).
LICENCES_BEFORE = {"packages": ["torch", "numpy", "scipy", "pandas", "sympy", "pyarrow", "matplotlib", "transformers"],
                   "files": ["*.dist-info/LICENSE*", "*.dist-info/licenses/**/*"], "extract": "text", "max_docs": 20}


@pytest.fixture(scope="module", params=["smollm2-135m.yaml", "smollm2-135m-tiny.yaml"])
def real_study(request):
    """(config, {source: documents}, {held-out text task: items}) of a real-model study, built from the
    installed packages as its corpus and task_items jobs build them."""
    config = validate_config(read_config_file(REPO / "experiments" / request.param))
    corpora = {name: load_documents(name, spec, config["world"]["seed"])[0] for name, spec in config["calibration"]["sources"].items()}
    tasks = {t for d in config["evaluation"]["dimensions"].values() for t in d["tasks"]}
    items = {t: build_items(t, items_spec(t))[0] for t in sorted(tasks) if (items_spec(t) or {}).get("builder") == "heldout_text"}
    assert items
    return config, corpora, items


def _words(text: str) -> bytes:
    return b" ".join(re.findall(rb"[A-Za-z\x80-\xff]{2,}", text.encode("utf-8"))).lower()


def _document_text(doc: dict) -> str:
    return doc["text"] if "text" in doc else "\n".join(m["content"] for m in doc["messages"])


def test_no_heldout_item_of_a_real_study_is_in_its_calibration_text(real_study):
    """Plain substring search by words (letters, lowercased; as calmix.calibration.contamination
    compares them): the first 50 words of every held-out item, all of it when shorter, are in no
    document of any calibration source."""
    _, corpora, items = real_study
    found = []
    for source, docs in corpora.items():
        text = b" " + b" \n ".join(_words(_document_text(d)) for d in docs) + b" "
        for task, task_items in items.items():
            for item in task_items:
                words = _words(item["text"]).split()
                if words and b" " + b" ".join(words[:50]) + b" " in text:
                    found.append((task, item["id"], source))
    assert found == []


def test_a_real_study_passes_its_heldout_check(real_study):
    from calmix.calibration.contamination import check_heldout

    _, corpora, items = real_study
    record = check_heldout(items, corpora.items())
    assert {t: r["items"] for t, r in record["tasks"].items()} == {t: len(i) for t, i in items.items()}
    assert record["sources"] == {name: len(docs) for name, docs in corpora.items()}


def test_the_real_study_as_it_was_fails_its_heldout_check(real_study):
    """Before issue 26 stdlib_code read pydoc_data/topics.py whole: the check names every held-out
    topic string inside it, though the file holds them as escaped literals."""
    from calmix.calibration.contamination import HeldoutOverlapError, check_heldout

    config, corpora, items = real_study
    if "stdlib_code" not in corpora:
        pytest.skip("the tiny study calibrates on no standard-library code")
    spec = {k: v for k, v in config["calibration"]["sources"]["stdlib_code"].items() if k != "exclude"}
    before = {**corpora, "stdlib_code": load_documents("stdlib_code", spec)[0]}
    with pytest.raises(HeldoutOverlapError) as err:
        check_heldout(items, before.items())
    topics = {i["id"] for i in items["heldout_prose"] if i["id"].startswith("python/pydoc_data/topics.py:")}
    inside = {label for _, label, source, o in err.value.overlaps if source == "stdlib_code" and o.contained
              and o.document == "python/pydoc_data/topics.py"}
    assert topics and inside == topics
    assert {source for _, _, source, _ in err.value.overlaps} == {"stdlib_code"}
    assert "source 'stdlib_code', document 'python/pydoc_data/topics.py'" in str(err.value)


def test_no_licence_of_the_real_study_can_be_held_out():
    """Licences are near-copies of each other (the same BSD, MIT or Apache text): every licence
    heldout_prose read until issue 26 shares a run of words with another licence of the same
    distributions, so none is held out (and heldout_prose reads none)."""
    assert load_installed("s", {"kind": "installed", **LICENCES_BEFORE, "part": "heldout"})[0] == []
    assert not any("LICENSE" in f for source in items_spec("heldout_prose")["sources"] for f in source["files"])


@pytest.mark.parametrize("entry", ["fakepkg/../../../../../../etc/hostname", "fakepkg/data/../../../outside.txt"])
def test_a_listed_file_outside_the_distribution_is_refused_naming_it(fakepkg, entry):
    """A RECORD that lists a path through '..' (or a link out) reads nothing outside the distribution."""
    (fakepkg.parent / "outside.txt").write_text("not the package's")
    with open(fakepkg / RECORD, "a") as f:
        f.write(f"{entry},,\n")
    installed._package_files.cache_clear()
    with pytest.raises(installed.InstalledSourceError, match=rf"fakepkg: its file '{re.escape(entry)}' .* resolves to .* outside"):
        load_installed("s", _spec("text", ["fakepkg/**/*"]))
    with pytest.raises(ConfigError, match=r"^config key 'calibration.sources.x.files': fakepkg: its file"):
        validate_config(_tiny_with(_spec("text", ["fakepkg/**/*"])), workdir=fakepkg)
