"""The built-in world: deterministic, every generator distinct, evaluation items held out."""

import re

from calmix.world.domain import DIMENSION_TASKS, WORLD_GENERATORS, World


def test_same_seed_same_text_other_seed_other_text():
    assert World(0).documents("web", 5, seed=1) == World(0).documents("web", 5, seed=1)
    assert World(0).documents("web", 5, seed=1) != World(0).documents("web", 5, seed=2)
    assert World(0).documents("web", 5, seed=1) != World(1).documents("web", 5, seed=1)


def test_at_least_twelve_calibration_sources_with_distinct_text():
    sources = [g for g in WORLD_GENERATORS if g != "pretrain"]
    assert len(sources) >= 12
    texts = {g: World(0).documents(g, 3, seed=0)[0] for g in sources}
    assert len(set(texts.values())) == len(sources)
    assert "def " in texts["code"] and " = " in texts["equations"]
    lines = texts["repetitive"].splitlines()
    assert len(set(lines)) == 1 and len(lines) >= 4


def test_general_items_use_held_out_cities_placed_by_suffix():
    world = World(0)
    train_text = "".join(world.documents("pretrain", 2000, seed=0))
    items = world.eval_items("world_general", 50, seed=0)
    for item in items:
        city = item["query"].removesuffix(" is a city in")
        assert city not in train_text
        country = item["choices"][item["label"]]
        assert city.endswith(world.countries[country]["suffix"])


def test_eval_items_have_the_task_format():
    world = World(0)
    for task in DIMENSION_TASKS.values():
        items = world.eval_items(task, 20, seed=0)
        assert items == world.eval_items(task, 20, seed=0)
        for item in items:
            if "choices" in item:
                assert len(item["choices"]) == 4 and 0 <= item["label"] < 4
            else:
                assert item["prompt"] and item["answer"]
    math = world.eval_items("world_math", 20, seed=0)
    for item in math:
        a, b = (int(t) for t in re.findall(r"\d+", item["prompt"])[:2])
        expected = a + b if "gets" in item["prompt"] else a - b
        assert item["answer"] == str(expected)
