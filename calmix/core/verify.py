"""calmix-verify: check every manifest of a results/ tree against its file, on demand.

Snakemake decides what to rerun from mtimes, and a job checks a file only when it reads it, so a
flipped byte in a finished study, an edited checkpoint or a deleted manifest stays hidden until
something reruns. This walks results/ once and checks what the manifests record: corpora, token
files, shards, pools, fetched GGUF files and offline task items against the sha256 in the .json
beside them; the world model and every
pruned checkpoint against the weights_sha256 of training.json / prune_report.json. A checkpoint
folder without its manifest, and a data file without one, are problems too. Hub models' snapshots
live in the Hugging Face cache, outside results/: their fetch manifests record the weights' sha256,
which the fetch checked and jobs compare with the cache's blob names, but they are not hashed here;
the per-item files of evaluations record no sha256 and are not checked.

It only reads: each file is hashed once (in parallel threads; hashlib releases the GIL), one line
per problem names the file, what is wrong and the `snakemake --forcerun` that rebuilds it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from calmix.core.integrity import CHECKPOINT_MANIFESTS, rebuild_target
from calmix.core.io import read_json, sha256_file

#: Data files that have a manifest (same name, .json) beside them: (folder under results/, pattern).
#: The patterns name the files at their depth, so e.g. results/world/eval/*.jsonl (no manifest) is not one.
DATA_FILES = (
    ("corpora", "*.jsonl"),
    ("world", "*.jsonl"),
    ("tokens", "*/*.parquet"),
    ("shards", "*/*/*.parquet"),
    ("pools", "*/*/*.parquet"),
    ("downloads", "*.gguf"),
    ("eval/items", "*.jsonl"),
)
#: Checkpoint folders and the manifests one of which each must have: (folder under results/, pattern, manifests).
CHECKPOINTS = (
    # the world model, a converted GGUF file (a hub model is results/models/<name>.json: not a folder)
    ("models", "*", ("training.json", "conversion.json")),
    ("pruned", "*/*/*/*/*", ("prune_report.json",)),
)
assert {m for _, _, names in CHECKPOINTS for m in names} == set(CHECKPOINT_MANIFESTS)

CONFIG_HINT = "[--configfile <your study's config>]"


@dataclass(frozen=True)
class Problem:
    """One damaged file or folder, and the output whose rebuild replaces it."""

    path: Path  # the damaged file or folder, as the study's working directory names it (results/...)
    what: str
    rebuild: Path  # the output whose --forcerun rebuilds it

    def line(self) -> str:
        return f"{self.path}: {self.what}; rebuild it: snakemake --forcerun {rebuild_target(self.rebuild)} {CONFIG_HINT}"


@dataclass(frozen=True)
class Expected:
    """A file and the sha256 a manifest records for it."""

    path: Path
    sha256: str
    manifest: Path
    rebuild: Path


def _visible(paths: Iterable[Path]) -> list[Path]:
    """Without hidden names: atomic writers' temporary siblings (.name.tmp-PID) are not outputs."""
    return sorted(p for p in paths if not p.name.startswith("."))


def _manifest(path: Path, rebuild: Path, key: str) -> tuple[dict | None, Problem | None]:
    """A manifest's record, or the problem that it is unreadable or records no ``key``."""
    try:
        record = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        what = "is not valid JSON (truncated or edited)" if isinstance(e, ValueError) else f"cannot be read ({e.strerror})"
        return None, Problem(path, what, rebuild)
    if not isinstance(record, dict) or key not in record:
        return None, Problem(path, f"{key} not recorded", rebuild)
    return record, None


def _data_files(results: Path) -> Iterator[Expected | Problem]:
    for folder, pattern in DATA_FILES:
        suffix = pattern.rpartition(".")[2]
        data = _visible((results / folder).glob(pattern))
        manifests = _visible((results / folder).glob(f"{pattern[: -len(suffix)]}json"))
        for path in sorted({*data, *(m.with_suffix(f".{suffix}") for m in manifests)}):
            manifest = path.with_suffix(".json")
            if not manifest.is_file():
                yield Problem(path, f"no manifest ({manifest.name} missing), so it cannot be checked", path)
            elif not path.is_file():
                yield Problem(path, f"missing (its manifest {manifest.name} is there)", path)
            else:
                record, problem = _manifest(manifest, path, "sha256")
                yield problem or Expected(path, record["sha256"], manifest, path)


def _checkpoints(results: Path) -> Iterator[Expected | Problem]:
    for folder, pattern, names in CHECKPOINTS:
        for checkpoint in _visible(p for p in (results / folder).glob(pattern) if p.is_dir()):
            manifest = next((checkpoint / n for n in names if (checkpoint / n).is_file()), None)
            if manifest is None:
                yield Problem(checkpoint, f"no {' or '.join(names)}, so its weights cannot be checked (deleted?)", checkpoint)
                continue
            name = manifest.name
            record, problem = _manifest(manifest, checkpoint, "weights_sha256")
            if problem:
                yield problem
                continue
            recorded = record["weights_sha256"]
            present = {p.name for p in _visible(checkpoint.glob("*.safetensors"))}
            for weights in sorted(set(recorded) | present):
                path = checkpoint / weights
                if weights not in present:
                    yield Problem(path, f"missing (recorded in {name})", checkpoint)
                elif weights not in recorded:
                    yield Problem(path, f"not recorded in {name}", checkpoint)
                else:
                    yield Expected(path, recorded[weights], manifest, checkpoint)


def _hash(path: Path) -> str | OSError:
    try:
        return sha256_file(path)
    except OSError as e:  # removed or unreadable while the tree was walked
        return e


def verify_tree(results: str | Path, jobs: int | None = None) -> tuple[int, list[Problem]]:
    """(files checked against a manifest, problems) of a results/ tree; reads only.

    Paths in the problems are named as the study's working directory names them (``results/...``),
    which is what `snakemake --forcerun` takes.
    """
    root = Path(results)
    named = Path(root.resolve().name)
    found = [*_data_files(root), *_checkpoints(root)]
    expected = [f for f in found if isinstance(f, Expected)]
    problems = [f for f in found if isinstance(f, Problem)]
    paths = sorted({e.path for e in expected})
    with ThreadPoolExecutor(max_workers=jobs or min(8, os.cpu_count() or 1)) as pool:
        digests = dict(zip(paths, pool.map(_hash, paths)))
    for e in expected:
        digest = digests[e.path]
        if isinstance(digest, OSError):
            problems.append(Problem(e.path, f"cannot be read ({digest.strerror})", e.rebuild))
        elif digest != e.sha256:
            what = f"sha256 differs from what {e.manifest.name} records (truncated or edited)"
            problems.append(Problem(e.path, what, e.rebuild))

    def rename(p: Path) -> Path:
        return named / p.relative_to(root)

    named_problems = {Problem(rename(p.path), p.what, rename(p.rebuild)) for p in problems}
    return len(paths), sorted(named_problems, key=lambda p: (str(p.path), p.what))


def summary(checked: int, problems: list[Problem]) -> str:
    """The closing line: how many files were hashed and how many problems were found."""
    return f"{checked} files verified, {len(problems)} problem{'' if len(problems) == 1 else 's'}"


def main(argv: list[str] | None = None) -> int:
    """Print one line per problem and a summary; exit status 0 when all is well, 1 on any problem."""
    parser = argparse.ArgumentParser(
        prog="calmix-verify",
        description="Check every manifest of a calmix results/ tree against its file (reads only).",
    )
    parser.add_argument("results", nargs="?", default="results", help="the results folder (default: results)")
    parser.add_argument("-j", "--jobs", type=int, default=None, help="files hashed at once (default: min(8, CPUs))")
    args = parser.parse_args(argv)
    if not Path(args.results).is_dir():
        parser.error(f"{args.results} is not a folder: run it in the study's working directory, or name its results folder")
    checked, problems = verify_tree(args.results, args.jobs)
    for problem in problems:
        print(problem.line())
    print(summary(checked, problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
