"""Which checkpoints a study prunes (calmix.pruning.plan), checked against the grid written out by hand."""

from calmix.pruning.plan import Checkpoint, checkpoints

BASE = {"methods": ["sparsegpt"], "profiles": ["uniform"], "sparsities": [0.6], "structures": ["unstructured"]}


def test_without_compare_every_setting_meets_every_set_and_seed():
    pruning = {**BASE, "methods": ["sparsegpt", "magnitude"]}
    got = checkpoints(pruning, ["a", "b"], [0, 1], "a")
    want = [Checkpoint("sparsegpt", "0.6", c, s) for c in "ab" for s in (0, 1)] + [Checkpoint("magnitude", "0.6", "none", 0)]
    assert got == want


def test_compare_grid_meets_only_its_sets_and_shares_nothing_twice():
    pruning = {**BASE, "compare": [{"methods": ["sparsegpt", "wanda", "magnitude"], "profiles": ["uniform", "owl"],
                                    "sparsities": [0.5, 0.6], "structures": ["unstructured", "2:4"]}]}
    got = checkpoints(pruning, ["a", "b", "mix"], [0, 1], "b")
    main = [Checkpoint("sparsegpt", "0.6", c, s) for c in ("a", "b", "mix") for s in (0, 1)]
    grid = []
    for method in ("sparsegpt", "wanda", "magnitude"):
        for profile in ("uniform", "owl"):
            label = method if profile == "uniform" else f"{method}-{profile}"
            for target in ["0.5", "0.6"] + (["2of4"] if profile == "uniform" else []):
                pairs = [("none", 0)] if method == "magnitude" else [("b", 0), ("b", 1)]
                grid += [Checkpoint(label, target, c, s) for c, s in pairs]
    assert got[:len(main)] == main
    assert got[len(main):] == [c for c in grid if c not in main]
    assert len(got) == len(set(got)) == 6 + 2 * 10 - 2 + 5


def test_each_compare_grid_defaults_to_the_main_grid_and_takes_its_own_sets_and_seeds():
    pruning = {**BASE, "compare": [{"sparsities": [0.5], "calibrations": ["mix"], "seeds": [1]},
                                   {"methods": ["magnitude"], "structures": ["unstructured", "2:4"]}]}
    got = checkpoints(pruning, ["a", "mix"], [0, 1], "a")
    assert got[4:] == [Checkpoint("sparsegpt", "0.5", "mix", 1), Checkpoint("magnitude", "0.6", "none", 0),
                       Checkpoint("magnitude", "2of4", "none", 0)]
