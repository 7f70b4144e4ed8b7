"""Which library modules each workflow script runs, and digests that change with the code, not its comments."""

from pathlib import Path

import pytest

from calmix.core.codehash import library_code, library_modules, module_digest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


KERNELS = {"calmix.pruning.sparsegpt", "calmix.pruning.wanda", "calmix.pruning.magnitude", "calmix.pruning.owl"}


@pytest.mark.parametrize("script, runs, not_runs", [
    ("prune_and_evaluate.py", {"calmix.pruning.driver", "calmix.pruning.checkpoints", "calmix.pruning.registry",
                               "calmix.models.loading", "calmix.calibration.shards", "calmix.core.io",
                               "calmix.evaluation.pruned", "calmix.evaluation.harness"},
     {"calmix.calibration.metrics", "calmix.fetch.hub", *KERNELS}),
    # kept checkpoints: pruning and scoring are jobs apart, so an edit to one never reruns the other
    ("prune.py", {"calmix.pruning.driver", "calmix.pruning.checkpoints", "calmix.models.folders", "calmix.calibration.shards"},
     {"calmix.evaluation.checkpoint", "calmix.evaluation.harness", "calmix.evaluation.pruned", "calmix.fetch.hub", *KERNELS}),
    ("evaluate_pruned.py", {"calmix.evaluation.checkpoint", "calmix.evaluation.harness", "calmix.models.folders"},
     {"calmix.pruning.driver", "calmix.pruning.checkpoints", "calmix.evaluation.pruned", "calmix.fetch.hub"}),
    ("shard.py", {"calmix.calibration.shards", "calmix.core.io"}, {"calmix.pruning.driver", "calmix.models.loading", "calmix.calibration.metrics"}),
    ("metrics.py", {"calmix.calibration.metrics", "calmix.models.loading", "calmix.calibration.shards"},
     {"calmix.pruning.driver", "calmix.pruning.checkpoints", "calmix.fetch.hub"}),
    ("evaluate.py", {"calmix.evaluation.harness", "calmix.evaluation.code_exec", "calmix.models.folders"},
     {"calmix.pruning.driver", "calmix.calibration.metrics", "calmix.fetch.hub", "calmix.analysis.report"}),
    ("report.py", {"calmix.analysis.plots", "calmix.analysis.report", "calmix.analysis.retention", "calmix.analysis.intervals",
                   "calmix.analysis.comparisons", "calmix.analysis.correlation"}, {"calmix.pruning.driver"}),
    # the hub code runs in the fetch jobs only
    ("fetch_model.py", {"calmix.fetch.hub"}, set()),
    ("fetch_task_data.py", {"calmix.fetch.hub", "calmix.fetch.task_data"}, set()),
    ("fetch_gguf.py", {"calmix.fetch.packages", "calmix.fetch.hub"}, {"calmix.config.checks", "calmix.world.domain", "calmix.models.gguf"}),
    ("convert_gguf.py", {"calmix.models.gguf", "calmix.models.loading"}, {"calmix.fetch.packages", "calmix.fetch.hub"}),
    ("task_items.py", {"calmix.evaluation.offline", "calmix.calibration.installed"}, {"calmix.evaluation.harness", "calmix.world.domain"}),
    *[(script, set(), {"calmix.fetch.hub"}) for script in ("corpus.py", "tokenize_corpus.py", "train_world_model.py", "prune_and_evaluate.py",
                                                            "generate_pool.py", "select_windows.py", "evaluate.py", "metrics.py")],
    # the world runs in world jobs only (a world source's corpus names it: see the corpus rule)
    ("world_corpus.py", {"calmix.world.domain"}, set()),
    ("world_eval_items.py", {"calmix.world.domain"}, set()),
    *[(script, set(), {"calmix.world.domain"}) for script in ("corpus.py", "tokenize_corpus.py", "train_world_model.py", "shard.py")],
    # the OIT metrics run in metrics jobs, not in the self-generated pools and selections
    ("generate_pool.py", {"calmix.calibration.selfgen", "calmix.calibration.ngrams"}, {"calmix.calibration.metrics"}),
    ("select_windows.py", {"calmix.calibration.selection", "calmix.calibration.ngrams"},
     {"calmix.calibration.metrics", "calmix.calibration.selfgen", "calmix.calibration.generation"}),
    # types are not code
    *[(script, set(), {"calmix.core.records"}) for script in ("prune_and_evaluate.py", "prune.py", "shard.py", "evaluate.py")],
])
def test_scripts_run_the_modules_they_import_transitively(script, runs, not_runs):
    modules = set(library_modules(SCRIPTS / script))
    assert runs <= modules and not modules & not_runs
    assert "calmix" in modules  # importing calmix.x runs the package's __init__


def test_imports_inside_functions_count(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("def f():\n    from calmix.world.domain import World\n    return World\n")
    assert "calmix.world.domain" in library_modules(script)


def test_digest_follows_the_code_not_comments_docstrings_or_layout(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""Doc."""\n\ndef f(x):\n    """Why."""\n    return x + 1\n')
    base = module_digest(module)
    module_digest.cache_clear()
    module.write_text('"""Another doc."""\n# a comment\n\n\ndef f(x):  # why\n    """Says more."""\n    return (x + 1)\n')
    assert module_digest(module) == base
    module_digest.cache_clear()
    module.write_text('"""Doc."""\n\ndef f(x):\n    """Why."""\n    return x + 2\n')
    assert module_digest(module) != base
    module_digest.cache_clear()


def test_library_code_is_a_stable_param():
    code = library_code(SCRIPTS / "prune_and_evaluate.py")
    assert list(code) == sorted(code) and all(len(d) == 16 for d in code.values())
    assert code == library_code(SCRIPTS / "prune_and_evaluate.py")


def test_a_kernel_loaded_by_name_joins_only_its_own_rule(tmp_path):
    from calmix.pruning import registry

    wanda = set(library_modules(SCRIPTS / "prune_and_evaluate.py", registry.modules("wanda-owl")))
    assert {"calmix.pruning.wanda", "calmix.pruning.owl"} <= wanda
    assert not wanda & {"calmix.pruning.sparsegpt", "calmix.pruning.magnitude"}


def test_pruning_and_evaluation_code_digest_apart():
    """A pruned checkpoint's job runs both, but its prune key digests only the pruning code and its
    records only the evaluation code (rules/common.smk: pruning_code; evaluate.py): an edit to one
    never redoes what the other made."""
    from calmix.core.codehash import PACKAGE_DIR

    pruning = set(library_modules(PACKAGE_DIR / "pruning" / "checkpoints.py", ["calmix.pruning.checkpoints"]))
    evaluation = set(library_modules(SCRIPTS / "evaluate.py"))
    assert {"calmix.pruning.driver", "calmix.pruning.checkpoints"} <= pruning
    assert not {m for m in pruning if m.startswith("calmix.evaluation")}
    assert {"calmix.evaluation.harness", "calmix.evaluation.checkpoint"} <= evaluation
    assert not {m for m in evaluation if m.startswith("calmix.pruning")} | {"calmix.evaluation.pruned"} & evaluation


def test_select_windows_imports_no_torch():
    """The selection is numpy over a cached pool: its job never pays for torch (nor can torch's threads
    outlive it)."""
    import subprocess
    import sys

    code = ("import sys; import calmix.calibration.selection, calmix.calibration.pools, calmix.calibration.shards; "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_type_annotations_are_not_code(tmp_path):
    module = tmp_path / "a.py"
    module.write_text("def f(x: int) -> int:\n    y: int = x + 1\n    return y\n")
    base = module_digest(module)
    module_digest.cache_clear()
    module.write_text("def f(x: float) -> 'Any':\n    y: float = x + 1\n    return y\n")
    assert module_digest(module) == base
    module_digest.cache_clear()
    module.write_text("def f(x: int) -> int:\n    y: int = x + 2\n    return y\n")
    assert module_digest(module) != base
    module_digest.cache_clear()
