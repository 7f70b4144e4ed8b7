"""Which library modules each workflow script runs, and digests that change with the code, not its comments."""

from pathlib import Path

import pytest

from calmix.core.codehash import library_code, library_modules, module_digest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.mark.parametrize("script, runs, not_runs", [
    ("prune.py", {"calmix.pruning.driver", "calmix.pruning.checkpoints", "calmix.models.loading", "calmix.calibration.shards", "calmix.core.io"}, {"calmix.calibration.metrics", "calmix.evaluation.harness"}),
    ("shard.py", {"calmix.calibration.shards", "calmix.core.io"}, {"calmix.pruning.driver", "calmix.models.loading", "calmix.calibration.metrics"}),
    ("metrics.py", {"calmix.calibration.metrics", "calmix.models.loading", "calmix.calibration.shards"}, {"calmix.pruning.driver", "calmix.pruning.checkpoints"}),
    ("evaluate.py", {"calmix.evaluation.harness", "calmix.evaluation.code_exec", "calmix.models.loading"}, {"calmix.pruning.driver", "calmix.calibration.metrics"}),
    ("report.py", {"calmix.analysis.plots", "calmix.analysis.report", "calmix.analysis.retention", "calmix.analysis.correlation"}, {"calmix.pruning.driver"}),
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
    code = library_code(SCRIPTS / "prune.py")
    assert list(code) == sorted(code) and all(len(d) == 16 for d in code.values())
    assert code == library_code(SCRIPTS / "prune.py")
