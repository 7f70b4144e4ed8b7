"""Workflow tier: lint, dry runs of every config, bad configs, a real tiny run, reruns, determinism.

Each workflow runs in its own temporary working directory (--directory), so results never mix.
"""

import collections
import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from calmix.config import read_config_files, validate_config
from calmix.pruning.plan import keeps_checkpoints
from conftest import REPO, TINY, snakemake, write_config  # so do the tiny_run and second_run fixtures

CONFIGS = [REPO / "config.yaml", *sorted((REPO / "experiments").glob("*.yaml"))]

pytestmark = pytest.mark.workflow


def planned_jobs(output: str) -> list[tuple[str, str]]:
    """(rule, first output) for every job a dry run plans."""
    jobs = re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    output: ([^,\n]+)", output, flags=re.M)
    return sorted(jobs)


def test_lint_is_clean(tmp_path):
    result = snakemake(tmp_path, "--lint", configfile=REPO / "config.yaml")
    assert result.returncode == 0, result.stderr
    assert "Congratulations" in result.stdout + result.stderr


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_dry_run_plans_the_whole_study(tmp_path, config):
    result = snakemake(tmp_path, "-n", configfile=config)
    assert result.returncode == 0, result.stdout + result.stderr
    rules = {rule for rule, _ in planned_jobs(result.stdout)}
    assert {"shard", "metrics", "evaluate_dense", "report"} <= rules
    study = validate_config(read_config_files([str(config)]))
    kept = keeps_checkpoints(study["pruning"], study["models"])  # pruning and scoring apart only where kept
    pruned = {"prune", "evaluate_pruned"} if kept else {"prune_and_evaluate"}
    assert pruned <= rules and not rules & ({"prune", "evaluate_pruned", "prune_and_evaluate"} - pruned)


def test_paper_config_plans_every_job_offline(tmp_path):
    # 15 hub sources and 4 builders (a mix, and Self-Cal, SGS and IGSP, each from its own generated
    # pool) x 1 seed, one hub model, SparseGPT at one sparsity, 4 dimensions (one fetch of lm-eval task
    # data each), plus the aggregates; target rules without outputs (all) are not listed.
    result = snakemake(tmp_path, "-n", configfile=REPO / "experiments" / "paper-llama3.1-8b.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = collections.Counter(rule for rule, _ in planned_jobs(result.stdout))
    sets = 15 + 4
    assert counts == {
        "fetch_model": 1, "corpus": 15, "tokenize": 15, "shard": 15, "mix": 1, "generate_pool": 3,
        "select_windows": 3, "metrics": sets, "metric_table": 1, "prune_and_evaluate": sets, "fetch_task_data": 4,
        "evaluate_dense": 1, "retention": 1, "correlations": 1, "report": 1,
    }
    assert not (tmp_path / "results").exists()


def test_prefetch_plans_exactly_the_downloads(tmp_path):
    result = snakemake(tmp_path, "-n", "prefetch", configfile=REPO / "experiments" / "paper-llama3.1-8b.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = collections.Counter(rule for rule, _ in planned_jobs(result.stdout))
    assert counts == {"fetch_model": 1, "corpus": 15, "fetch_task_data": 4}


HUB_SOURCE = {"kind": "hub", "path": "allenai/c4", "revision": "1588ec454efa1a09f29cd18ddd04fe05fc8653a2", "name": "en"}

BAD_CONFIGS = {
    "unknown key": (lambda c: c["pruning"].update(bogus=1), "pruning.bogus"),
    "wrong type": (lambda c: c["calibration"].update(nsamples="many"), "calibration.nsamples"),
    "sparsity outside (0,1)": (lambda c: c["pruning"].update(sparsities=[1.2]), "pruning.sparsities[0]"),
    "unknown source kind": (lambda c: c["calibration"]["sources"].update(x={"kind": "ftp"}), "calibration.sources.x.kind"),
    "missing local file": (
        lambda c: c["calibration"]["sources"].update(x={"kind": "local", "path": "nope.txt"}),
        "calibration.sources.x.path",
    ),
    "hub dataset without a revision": (
        lambda c: c["calibration"]["sources"].update(x={"kind": "hub", "path": "allenai/c4"}),
        "calibration.sources.x.revision",
    ),
    "broken template": (
        lambda c: c["calibration"]["sources"].update(x=dict(HUB_SOURCE, template="{question")),
        "calibration.sources.x.template",
    ),
    "template reading an attribute": (
        lambda c: c["calibration"]["sources"].update(x=dict(HUB_SOURCE, template="{text.upper}")),
        "calibration.sources.x.template",
    ),
    "a key the source's kind does not read": (
        lambda c: c["calibration"]["sources"]["web"].update(path="web.txt"),
        "calibration.sources.web.path",
    ),
    "integer written as a float": (lambda c: c["calibration"].update(seeds=[0.0, 1.0]), "calibration.seeds[0]"),
    "source name YAML reads as a number": (
        lambda c: c["calibration"]["sources"].update({2024: c["calibration"]["sources"].pop("web")}),
        "calibration.sources.2024",
    ),
    "skip list leaving nothing to prune": (lambda c: c["pruning"].update(skip=["*"]), "pruning.skip"),
    "windows longer than the model's context": (lambda c: c["calibration"].update(seqlen=128), "calibration.seqlen"),
    "more shots than the task has items": (
        lambda c: c["evaluation"]["dimensions"]["general"].update(num_fewshot=30),
        "evaluation.dimensions.general.num_fewshot",
    ),
    "world model heads not dividing its width": (
        lambda c: c["world"]["model"].update(hidden_size=33),
        "world.model.hidden_size",
    ),
    "negative mix weight": (
        lambda c: c["calibration"].update(builders={"m": {"kind": "mix", "sources": {"web": -1, "code": 1}}}),
        "calibration.builders.m.sources.web",
    ),
    "metric without its filter": (
        lambda c: c["evaluation"]["dimensions"]["general"].update(metric={"world_general": "acc"}),
        "evaluation.dimensions.general.metric.world_general",
    ),
    "hub model without a revision": (
        lambda c: c["models"].update(llama={"kind": "hub", "path": "meta-llama/Llama-3.1-8B"}),
        "models.llama.revision",
    ),
    "code-executing task without the opt-in": (
        lambda c: c["evaluation"]["dimensions"].update(code={"tasks": ["mbpp"]}),
        "evaluation.dimensions.code.tasks[0]",
    ),
    "world code-executing task without the opt-in": (
        lambda c: c["evaluation"]["dimensions"].update(code={"tasks": ["world_code", "world_code_exec"]}),
        "evaluation.dimensions.code.tasks[1]",
    ),
    "dimension with no task": (
        lambda c: c["evaluation"]["dimensions"].update(math={"tasks": []}),
        "evaluation.dimensions.math.tasks",
    ),
}


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=str)
def test_bad_config_fails_before_any_job_naming_the_key(tmp_path, case):
    edit, key = BAD_CONFIGS[case]
    config = yaml.safe_load(TINY.read_text())
    edit(config)
    result = snakemake(tmp_path, configfile=write_config(tmp_path / "bad.yaml", config))
    assert result.returncode != 0
    assert f"config key '{key}'" in result.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


# What YAML itself hides or cannot read. `python -m calmix.config` (which `make run` calls first) names
# the file and the line; so does the workflow, except where Snakemake rejects the file itself while
# reading --configfile, before the Snakefile runs (its message names no file): then it still fails
# before any job.
BAD_FILES = {  # case: (text, what the message says, whether the workflow's own check sees it)
    "a key written twice": ("calibration:\n  nsamples: 8\n  nsamples: 16\n", "line 3: key 'nsamples' appears twice", True),
    "source name YAML reads as a boolean": (
        "calibration:\n  sources:\n    on: {kind: world, generator: web}\n", "'calibration.sources.True'", True),
    "YAML syntax error": ("calibration:\n  nsamples: [8\n", "line 3, column 1: not valid YAML", False),
    "empty file": ("# nothing yet\n", "is empty", False),
    "a list at the top level": ("- nsamples: 8\n", "the top level is a list", False),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=str)
def test_bad_config_file_fails_before_any_job_naming_the_file(tmp_path, case):
    text, problem, workflow_names_it = BAD_FILES[case]
    tiny, bad = tmp_path / "tiny.yaml", tmp_path / "bad.yaml"
    shutil.copy(TINY, tiny)
    bad.write_text(text)
    check = subprocess.run([sys.executable, "-m", "calmix.config", str(tiny), str(bad)], capture_output=True, text=True)
    assert check.returncode == 1 and check.stdout == ""
    assert check.stderr.startswith("calmix error:") and problem in check.stderr and "bad.yaml" in check.stderr
    result = snakemake(tmp_path, configfile=[tiny, bad])
    assert result.returncode != 0
    if workflow_names_it:
        error = [line for line in result.stderr.splitlines() if line.startswith("calmix error:")]
        assert len(error) == 1 and problem in error[0] and "bad.yaml" in error[0], result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


PLOTS = ["rho_heatmap.png", "retention.png", "profile.png",
         "scatter/world_sparsegpt_0.5.png", "scatter/world_wanda_0.5.png"]


def test_tiny_run_writes_the_report_and_every_log(tiny_run):
    workdir = tiny_run
    report = (workdir / "results" / "report.md").read_text()
    assert "Retention" in report and "Spearman" in report
    for png in PLOTS:
        assert (workdir / "results" / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (workdir / "results" / "plots" / "scatter").glob("*.png")) == [
        "world_sparsegpt_0.5.png", "world_wanda_0.5.png"]  # magnitude has one set: no correlations
    assert "step 30/30" in (workdir / "logs" / "train_world_model" / "world.log").read_text()
    assert "layer 2/2" in next((workdir / "logs" / "prune").rglob("*.log")).read_text()
    scores = sorted((workdir / "results" / "eval" / "world").rglob("*.json"))
    assert scores and all(p.with_suffix(".items.parquet").is_file() for p in scores)  # per-item results kept


def test_every_retention_figure_and_rho_has_an_interval(tiny_run):
    tables = tiny_run / "results" / "tables"
    summary = pd.read_parquet(tables / "retention_summary.parquet")
    calibrated = summary[summary.method != "magnitude"]
    assert set(calibrated.seeds) == {2} and set(summary[summary.method == "magnitude"].seeds) == {1}
    for value in ("retention", "chance_adjusted"):
        finite = summary[np.isfinite(summary[value])]
        assert not finite.empty and np.isfinite(finite[[f"{value}_low", f"{value}_high"]]).all().all()
        assert (finite[f"{value}_low"] <= finite[f"{value}_high"]).all()
    assert np.isfinite(calibrated.retention_sd).all()
    perplexity = calibrated[calibrated.name == "perplexity"]
    assert (perplexity.retention_high > perplexity.retention_low).all()  # items and seeds both vary
    per_checkpoint = pd.read_parquet(tables / "retention.parquet")
    assert np.isfinite(per_checkpoint[["retention_low", "retention_high"]]).all().all()
    corr = pd.read_parquet(tables / "correlations.parquet")
    defined = corr[np.isfinite(corr.rho)]
    assert set(defined.dimension) == {"perplexity", "total"}  # general is at chance, constant
    assert np.isfinite(defined[["rho_low", "rho_high"]]).all().all()
    assert (defined.rho_low <= defined.rho_high).all()
    text = (tiny_run / "results" / "report.md").read_text()
    row = summary[(summary.method == "sparsegpt") & (summary.calib == "web") & (summary.level == "total")].iloc[0]
    assert f"{100 * row.retention:.1f} [{100 * row.retention_low:.1f}, {100 * row.retention_high:.1f}]" in text


def test_html_report_builds_offline_with_every_category_and_plot(tiny_run, tmp_path):
    html = tmp_path / "report.html"
    result = snakemake(tiny_run, "--report", str(html), configfile=TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    text = html.read_text()
    for category in ("Metrics", "Retention", "Correlations"):
        assert f'"{category}"' in text or f"'{category}'" in text or f">{category}<" in text, category
    tables = ["metrics.csv", "retention.csv", "retention_summary.csv", "retention_settings.csv", "correlations.csv"]
    for name in [*(Path(p).name for p in PLOTS), *tables]:
        assert name in text, name
    for caption in ("Benjamini-Hochberg", "two-stage percentile bootstrap", "Capability profile"):
        assert caption in text, caption
    assert not re.search(r"<(?:script|link|img)[^>]+(?:src|href)=[\"']https?://", text)  # self-contained


def test_code_executing_task_runs_as_a_job_with_the_opt_in(tiny_run, tmp_path):
    workdir = tmp_path / "code"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    config = yaml.safe_load(TINY.read_text())
    config["evaluation"]["dimensions"]["code"] = {"tasks": ["world_code_exec"]}
    config["evaluation"]["allow_code_execution"] = True
    target = "results/eval/world/dense/code.json"
    result = snakemake(workdir, target, configfile=write_config(tmp_path / "code.yaml", config))
    assert result.returncode == 0, result.stderr[-3000:]
    entry = json.loads((workdir / target).read_text())["tasks"]["world_code_exec"]
    assert entry["metric"] == "pass@1,none" and 0.0 <= entry["score"] <= 1.0
    items = pd.read_parquet(workdir / "results/eval/world/dense/code.items.parquet")
    assert len(items) == entry["n"] and items.score.isin([0.0, 1.0]).all()
    assert "code execution" in (workdir / "logs/evaluate_dense/world.log").read_text().lower()


def test_two_runs_give_identical_shards_metrics_and_pruned_weights(tiny_run, second_run):
    first, second = tiny_run, second_run
    files = sorted(p.relative_to(first) for d in ("results/shards", "results/metrics") for p in (first / d).rglob("*") if p.is_file())
    files += sorted(p.relative_to(first) for p in (first / "results" / "tables").glob("metrics.*"))
    files += sorted(p.relative_to(first) for p in (first / "results" / "pruned").rglob("*.safetensors"))
    assert any(p.suffix == ".parquet" for p in files) and any(p.name == "metrics.csv" for p in files)
    assert len([p for p in files if p.suffix == ".safetensors"]) == 13  # 2 methods x 3 sources x 2 seeds + magnitude
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_finished_run_plans_nothing(tiny_run):
    result = snakemake(tiny_run, "-n", configfile=TINY)
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_adding_a_source_plans_only_its_branch_and_the_aggregates(tiny_run, tmp_path):
    workdir = tmp_path / "grown"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    config = yaml.safe_load(TINY.read_text())
    grown = copy.deepcopy(config)
    grown["calibration"]["sources"]["stories"] = {"kind": "world", "generator": "stories", "docs": 40}
    result = snakemake(workdir, "-n", configfile=write_config(tmp_path / "grown.yaml", grown))
    assert result.returncode == 0, result.stderr
    dims = list(config["evaluation"]["dimensions"])
    sparsity = config["pruning"]["sparsities"][0]
    calibrated = [m for m in config["pruning"]["methods"] if m != "magnitude"]
    seeds = config["calibration"]["seeds"]
    expected = sorted([
        ("corpus", "results/corpora/stories.jsonl"),
        ("heldout_check", "results/eval/heldout_check.json"),  # the new source against world_perplexity's items
        ("tokenize", "results/tokens/world/stories.parquet"),
        *[("shard", f"results/shards/world/stories/seed{s}.parquet") for s in seeds],
        ("metrics", f"results/metrics/world/stories/seed{seeds[0]}.json"),  # one job per set, named by its first output
        *[("prune", f"results/prune_reports/world/{m}/{sparsity}/stories/seed{seeds[0]}.json")
          for m in calibrated],  # one job per set and setting: prune each seed
        ("evaluate_pruned", f"results/eval/world/{calibrated[0]}/{sparsity}/stories/seed{seeds[0]}/{dims[0]}.json (update)"),
        # one job per set: score each of its checkpoints
        ("metric_table", "results/tables/metrics.csv"),
        ("retention", "results/tables/retention.csv"),
        ("correlations", "results/tables/correlations.csv"),
        ("report", "results/report.md"),
    ])
    planned = [job for job in planned_jobs(result.stdout) if job[0] != "all"]
    assert planned == expected


def test_editing_one_dimensions_limit_rescores_that_dimension_and_prunes_nothing(finished, tmp_path):
    """Kept checkpoints: a dimension's edit plans only the scoring jobs (their dimensions param holds
    every dimension), and each of them rescores the edited dimension alone; no checkpoint is pruned again."""
    config = yaml.safe_load(TINY.read_text())
    config["evaluation"]["dimensions"]["general"]["limit"] = 5
    edited = write_config(tmp_path / "edited.yaml", config)
    plan = snakemake(finished, "-n", configfile=edited)
    assert plan.returncode == 0, plan.stderr
    rules = collections.Counter(rule for rule, _ in planned_jobs(plan.stdout))
    scoring = {"evaluate_dense", "evaluate_pruned", "evaluate_pruned_seed"}
    assert set(rules) - scoring == {"retention", "correlations", "report"} and rules.keys() & scoring == scoring, rules

    checkpoints = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (finished / "results/pruned").rglob("*") if p.is_file()}
    records = {p: p.read_bytes() for p in (finished / "results/eval").rglob("perplexity.*")}
    result = snakemake(finished, configfile=edited)
    assert result.returncode == 0, result.stderr[-4000:]
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in checkpoints} == checkpoints  # nothing pruned
    assert {p: p.read_bytes() for p in records} == records  # the other dimension's records as they were
    general = sorted((finished / "results/eval/world").rglob("general.json"))
    assert general and all(json.loads(p.read_text())["tasks"]["world_general"]["n"] == 5 for p in general)


def test_adding_a_mix_plans_its_shards_from_the_existing_source_shards(tiny_run, tmp_path):
    workdir = tmp_path / "mixed"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    config = yaml.safe_load(TINY.read_text())
    config["calibration"]["builders"] = {"mix": {"kind": "mix"}}
    result = snakemake(workdir, "-n", configfile=write_config(tmp_path / "mixed.yaml", config))
    assert result.returncode == 0, result.stderr
    dims = list(config["evaluation"]["dimensions"])
    sparsity = config["pruning"]["sparsities"][0]
    seeds = config["calibration"]["seeds"]
    calibrated = [m for m in config["pruning"]["methods"] if m != "magnitude"]
    expected = sorted([
        *[("mix", f"results/shards/world/mix/seed{s}.parquet") for s in seeds],
        ("metrics", f"results/metrics/world/mix/seed{seeds[0]}.json"),  # one job per set, named by its first output
        *[("prune", f"results/prune_reports/world/{m}/{sparsity}/mix/seed{seeds[0]}.json")
          for m in calibrated],  # one job per set and setting: prune each seed
        ("evaluate_pruned", f"results/eval/world/{calibrated[0]}/{sparsity}/mix/seed{seeds[0]}/{dims[0]}.json (update)"),
        # one job per set: score each of its checkpoints
        ("metric_table", "results/tables/metrics.csv"),
        ("retention", "results/tables/retention.csv"),
        ("correlations", "results/tables/correlations.csv"),
        ("report", "results/report.md"),
    ])
    assert [job for job in planned_jobs(result.stdout) if job[0] != "all"] == expected


def test_parsing_the_workflow_imports_no_torch(tmp_path):
    """Every dry run and every cluster job parses the workflow: with builders, OWL and N:M configured it
    must read the registries without importing torch, transformers or lm-eval."""
    config = yaml.safe_load(TINY.read_text())
    config["calibration"]["builders"] = {"mix": {"kind": "mix"}, "selfcal": {"kind": "selfcal"},
                                         "sgs": {"kind": "sgs", "pool_size": 10}, "igsp": {"kind": "igsp"}}
    config["pruning"].update(structures=["unstructured", "2:4"], profiles=["uniform", "owl"])
    configfile = write_config(tmp_path / "parse.yaml", config)
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('HEAVY', sorted(m for m in ('torch', 'transformers', 'lm_eval', 'datasets') if m in sys.modules)))\n"
        "from snakemake.cli import main\n"
        f"main(['-s', {str(REPO / 'Snakefile')!r}, '--directory', {str(tmp_path)!r}, '-n', '--configfile', {str(configfile)!r}])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HEAVY []" in result.stdout, result.stdout[-2000:]
    assert re.search(r"generate_pool\s+6", result.stdout) and "wanda-owl" in result.stdout


def test_n_m_and_owl_studies_reach_the_report(tiny_run, tmp_path):
    """2:4 and 4:8 structures and the OWL profile, through pruning, evaluation, retention and the report."""
    workdir = tmp_path / "nm"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    config = yaml.safe_load(TINY.read_text())
    config["calibration"]["seeds"] = [0]
    config["pruning"].update(methods=["wanda"], structures=["unstructured", "2:4", "4:8"], profiles=["uniform", "owl"])
    config["evaluation"]["dimensions"] = {"perplexity": config["evaluation"]["dimensions"]["perplexity"]}
    result = snakemake(workdir, configfile=write_config(tmp_path / "nm.yaml", config))
    assert result.returncode == 0, result.stderr[-4000:]
    table = pd.read_csv(workdir / "results/tables/retention.csv", dtype={"target": str})
    assert set(zip(table["method"], table["target"])) == {
        ("wanda", "0.5"), ("wanda", "2:4"), ("wanda", "4:8"), ("wanda-owl", "0.5")}
    for calib in config["calibration"]["sources"]:
        report = json.loads((workdir / f"results/pruned/world/wanda-owl/0.5/{calib}/seed0/prune_report.json").read_text())
        layers = report["profile"]["layer_sparsities"]
        assert report["profile"]["name"] == "owl" and sum(layers) / len(layers) == pytest.approx(0.5)
        assert report["verified"]["layers_checked"] == len([e for e in report["layers"] if not e["skipped"]])
        nm = json.loads((workdir / f"results/pruned/world/wanda/2of4/{calib}/seed0/prune_report.json").read_text())
        assert nm["verified"]["nm_valid"] is True
    markdown = (workdir / "results/report.md").read_text()
    assert "2:4" in markdown and "4:8" in markdown and "wanda-owl" in markdown


def test_self_generated_builders_cache_their_pools(tiny_run, tmp_path):
    workdir = tmp_path / "built"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    config = yaml.safe_load(TINY.read_text())
    config["calibration"]["builders"] = {
        "selfcal": {"kind": "selfcal"}, "sgs": {"kind": "sgs", "pool_size": 10}, "igsp": {"kind": "igsp"},
    }
    shards = [f"results/shards/world/{b}/seed0.parquet" for b in config["calibration"]["builders"]]
    result = snakemake(workdir, *shards, configfile=write_config(tmp_path / "built.yaml", config))
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("selfcal", "sgs", "igsp"):
        manifest = json.loads((workdir / f"results/shards/world/{name}/seed0.json").read_text())
        assert manifest["kind"] == name and manifest["nsamples"] == config["calibration"]["nsamples"]
        assert len(manifest["pool_indices"]) == manifest["nsamples"] and "sampling" in manifest["pool"]
    # A selection knob reruns only the selection; a generation knob reruns the pool too.
    config["calibration"]["builders"]["igsp"]["strata"] = 1
    config["calibration"]["builders"]["sgs"]["filter_quantile"] = 0.1  # 10 candidates still leave 8
    config["calibration"]["builders"]["selfcal"]["t_initial"] = 1.5
    result = snakemake(workdir, "-n", *shards, configfile=write_config(tmp_path / "tuned.yaml", config))
    assert result.returncode == 0, result.stderr[-3000:]
    assert planned_jobs(result.stdout) == sorted([
        ("generate_pool", "results/pools/world/selfcal/seed0.parquet"),
        *[("select_windows", f"results/shards/world/{b}/seed0.parquet") for b in ("selfcal", "sgs", "igsp")],
    ])
