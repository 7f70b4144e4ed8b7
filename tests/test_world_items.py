"""Held-out items of the optional world tasks, and the existing items and corpora left as they were."""

import hashlib
import json

from calmix.world.domain import DIMENSION_TASKS, WORLD_TASKS, World

# sha256 (first 16 hex digits) of the jsonl the world_eval_items rule writes for world seed 0 and
# 200 items (the default study), recorded before world_code_exec and world_perplexity existed:
# adding tasks must not change a finished study's inputs.
FROZEN_ITEMS = {
    "world_general": "d6976658be527096",
    "world_commonsense": "2d4c3eab7f3a53fc",
    "world_code": "2063feccf56568ab",
    "world_math": "d8189797f3d17807",
}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_dimension_items_and_corpora_are_unchanged():
    world = World(0)
    for task in DIMENSION_TASKS.values():
        lines = "".join(json.dumps(item) + "\n" for item in world.eval_items(task, 200, seed=0))
        assert _digest(lines) == FROZEN_ITEMS[task], task
    assert _digest("".join(world.documents("pretrain", 300, seed=0))) == "5ba4de98f9d47866"
    assert _digest("".join(world.documents("web", 40, seed=1))) == "d32cbd4b4cbab000"


def test_perplexity_documents_are_held_out_text():
    world = World(0)
    docs = [item["text"] for item in world.eval_items("world_perplexity", 60, seed=0)]
    assert docs == [item["text"] for item in World(0).eval_items("world_perplexity", 60, seed=0)]
    assert len(set(docs)) == len(docs) and all(d and not d.endswith("\n") for d in docs)
    assert sum(len(d.split()) for d in docs) / len(docs) > 40  # several pieces each, like a corpus document
    seen = {d.rstrip("\n") for d in world.documents("pretrain", 3000, seed=0)}  # the default training corpus
    seen |= {d.rstrip("\n") for g in ("web", "qa", "stories") for d in world.documents(g, 400, seed=1)}
    assert not seen & set(docs)


def test_every_world_task_has_items_and_a_task_yaml():
    from calmix.evaluation.tasks import DEFAULT_TASK_DIR

    for task in WORLD_TASKS:
        assert World(0).eval_items(task, 3, seed=0), task
        assert (DEFAULT_TASK_DIR / f"{task}.yaml").is_file(), task
