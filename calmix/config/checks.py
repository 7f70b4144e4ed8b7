"""The checks a schema cannot express: keys read by other kinds, names that must exist, values beyond
what the models, the data or the pruning methods can give. One helper per kind of check."""

from __future__ import annotations

import functools
import json
from fnmatch import fnmatch
from pathlib import Path

import yaml

from calmix.calibration import builders
from calmix.config.files import ConfigError
from calmix.config.kinds import KEYS_BY_KIND, LLAMA_LIKE, gguf_origin
from calmix.config.schema import SCHEMA_PATH
from calmix.pruning import plan, registry

TASK_DIR = SCHEMA_PATH.parent / "lm_eval_tasks"
#: Dimension names the tables use themselves (calmix.analysis.retention.TOTAL: the mean over dimensions).
RESERVED_DIMENSIONS = ("total",)


def builder_knobs(kind: str) -> set[str]:
    """The config keys a calibration builder of this kind reads (besides 'kind')."""
    return builders.KINDS[kind].knobs - {"kind"}


def llama_linear_names(num_layers: int) -> list[str]:
    """The decoder-layer linears of a LLaMA-named model (LlamaForCausalLM, Mistral, Qwen2), in module
    order, without lm_head (never pruned): what pruning.skip patterns are matched against."""
    members = [f"self_attn.{p}_proj" for p in "qkvo"] + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]
    return [f"model.layers.{i}.{m}" for i in range(num_layers) for m in members]


def model_facts(name: str, config: dict, workdir: Path) -> dict | None:
    """What is known of a model before it is loaded: {max_positions, positions_key, linears, inputs, layers}
    (inputs: {config key: in_features it sets}; layers: its decoder layers); None for a hub or GGUF model
    without models.<name>.architecture, known only once fetched."""
    spec = config["models"][name]
    if spec["kind"] == "world":
        arch = config["world"]["model"]
        return {
            "max_positions": arch["max_position_embeddings"],
            "positions_key": "world.model.max_position_embeddings",
            "layers": arch["num_layers"],
            "linears": llama_linear_names(arch["num_layers"]),
            "inputs": {"world.model.hidden_size": arch["hidden_size"],
                       "world.model.intermediate_size": arch["intermediate_size"]},
        }
    if spec["kind"] == "local":
        try:
            hf = json.loads((workdir / spec["path"] / "config.json").read_text())
        except (OSError, ValueError):
            return None
        where = f"{spec['path']}/config.json"
        facts: dict = {"max_positions": hf.get("max_position_embeddings"), "positions_key": f"max_position_embeddings in {where}",
                       "layers": hf.get("num_hidden_layers", hf.get("n_layer")), "linears": None, "inputs": {}}
        if hf.get("model_type") in LLAMA_LIKE and isinstance(hf.get("num_hidden_layers"), int):
            facts["linears"] = llama_linear_names(hf["num_hidden_layers"])
            heads, hidden = hf.get("num_attention_heads"), hf.get("hidden_size")
            head_dim = hf.get("head_dim") or (hidden // heads if hidden and heads else None)
            facts["inputs"] = {f"hidden_size in {where}": hidden, f"intermediate_size in {where}": hf.get("intermediate_size"),
                               f"num_attention_heads x head_dim in {where}": heads * head_dim if heads and head_dim else None}
        return facts
    if spec.get("architecture"):
        return {"max_positions": None, "positions_key": None, "layers": spec["architecture"]["layers"], "linears": None,
                "inputs": {}}
    return None


def _check_kind_keys(where: str, noun: str, spec: dict) -> None:
    """A key the kind does not read is a mistake (a world source with max_docs still gives 400 documents)."""
    allowed = KEYS_BY_KIND[noun][spec["kind"]]
    stray = [k for k in spec if k not in allowed]
    if stray:
        raise ConfigError(
            f"config key '{where}.{stray[0]}': a {spec['kind']} {noun} does not read {stray[0]!r}. "
            f"Its keys: {', '.join(allowed)}"
        )


def _check_template(where: str, spec: dict) -> None:
    """The corpus's own template rule (calmix.calibration.corpora.template_fields), and what the records can fill."""
    from calmix.calibration.corpora import FORMATS, TemplateError, template_fields

    if "chat_field" in spec and "template" in spec:
        raise ConfigError(f"config key '{where}.template': a source with chat_field renders the messages with the "
                          "model's chat template and does not read 'template'; remove one of the two")
    if "chat_field" in spec:
        return
    try:
        fields = template_fields(spec.get("template", "{text}"))
    except TemplateError as e:
        raise ConfigError(f"config key '{where}.template': {e}") from None
    fmt = spec.get("format", "auto")
    if fmt == "auto" and spec["kind"] == "local":
        fmt = FORMATS.get(Path(spec["path"]).suffix.lower(), "auto")
    if spec["kind"] == "local" and fmt == "text" and fields != ["text"]:
        raise ConfigError(f"config key '{where}.template': text files give each document one field, 'text', but the "
                          f"template reads {fields}; read {{text}} only")


def _check_documents(where: str, spec: dict, calibration: dict) -> None:
    """sampling: documents starts every window with a new document, so it needs nsamples of them."""
    from calmix.calibration.corpora import WORLD_DOCS

    if spec.get("sampling", calibration["sampling"]) != "documents":
        return
    key = "docs" if spec["kind"] == "world" else "max_docs"
    count = spec.get("docs", WORLD_DOCS) if spec["kind"] == "world" else spec.get("max_docs")
    if count is not None and count < calibration["nsamples"]:
        raise ConfigError(
            f"config key '{where}.{key}': {count} documents cannot fill calibration.nsamples = {calibration['nsamples']} "
            f"windows with sampling: documents (each window starts a new document); raise {key} to at least "
            f"{calibration['nsamples']} or use sampling: windows"
        )


def _check_installed(where: str, spec: dict) -> None:
    """Every named distribution is installed and gives a file (the corpus reads every one it is given),
    and every file glob matches a file of one of them."""
    from packaging.utils import canonicalize_name

    from calmix.calibration.installed import EXTRACT_FILES, InstalledSourceError, matched_files, misfits, package_version

    if spec.get("part") == "heldout":
        raise ConfigError(
            f"config key '{where}.part': 'heldout' is the held-out part that the held-out text tasks score, never "
            "calibration text; remove the key (a calibration source reads part: calibration)"
        )
    seen: dict[str, int] = {}
    for i, package in enumerate(spec["packages"]):
        if (first := seen.setdefault(canonicalize_name(package), i)) != i:
            raise ConfigError(
                f"config key '{where}.packages[{i}]': {package!r} is the distribution packages[{first}] already names "
                f"({spec['packages'][first]!r}); each would give every document again. Name it once"
            )
        try:
            package_version(package)
        except InstalledSourceError as e:
            raise ConfigError(f"config key '{where}.packages': {e}") from None
    # each pattern matched against each package once; both checks below read this table
    try:
        matches = {(p, pattern): bool(matched_files(p, [pattern])[1]) for p in spec["packages"] for pattern in spec["files"]}
    except InstalledSourceError as e:
        raise ConfigError(f"config key '{where}.files': {e}") from None
    for pattern in spec["files"]:
        if not any(matches[p, pattern] for p in spec["packages"]):
            raise ConfigError(
                f"config key '{where}.files': {pattern!r} matches no file of {', '.join(spec['packages'])} "
                "(globs are relative to the distribution's root, e.g. 'sympy/**/*.py' or '*.dist-info/METADATA')"
            )
    for i, package in enumerate(spec["packages"]):
        if not any(matches[package, pattern] for pattern in spec["files"]):
            raise ConfigError(
                f"config key '{where}.packages[{i}]': no file of {package} matches {spec['files']}; "
                "remove the package or add a glob that matches its files"
            )
    for package in spec["packages"]:
        if wrong := misfits(spec["extract"], matched_files(package, spec["files"], spec.get("exclude", []))[1]):
            fits = " or ".join(EXTRACT_FILES[spec["extract"]])
            raise ConfigError(
                f"config key '{where}.extract': {spec['extract']!r} reads {fits} files, and 'files' matches "
                f"{len(wrong)} other file(s) of {package} ({', '.join(wrong[:3])}{', ...' if len(wrong) > 3 else ''}); "
                "narrow the globs, or use extract: text to read whole files"
            )
    exclude = spec.get("exclude", [])
    for i, pattern in enumerate(exclude):  # a mistyped glob would leave in the file it names
        if all(matched_files(p, spec["files"], [pattern])[1] == matched_files(p, spec["files"])[1] for p in spec["packages"]):
            raise ConfigError(
                f"config key '{where}.exclude[{i}]': {pattern!r} leaves out no file that 'files' matches in "
                f"{', '.join(spec['packages'])}; correct the glob (relative to the distribution's root) or remove it"
            )
    for package in spec["packages"] if exclude else []:
        if not matched_files(package, spec["files"], exclude)[1]:
            raise ConfigError(
                f"config key '{where}.exclude': it leaves out every file of {package} that 'files' matches; "
                f"remove {package} from packages instead"
            )


def _check_sources(config: dict, workdir: Path) -> None:
    from calmix.calibration.corpora import local_files
    from calmix.world.domain import WORLD_GENERATORS

    for key, spec in config["calibration"]["sources"].items():
        where = f"calibration.sources.{key}"
        _check_kind_keys(where, "source", spec)
        if spec["kind"] == "world" and spec["generator"] not in WORLD_GENERATORS:
            raise ConfigError(
                f"config key '{where}.generator': unknown world generator {spec['generator']!r}. "
                f"Choose one of: {', '.join(WORLD_GENERATORS)}"
            )
        if spec["kind"] == "local" and not local_files(str(workdir / spec["path"])):
            raise ConfigError(
                f"config key '{where}.path': no file matches {spec['path']!r} "
                f"(relative paths are resolved against {workdir}). Fix the path or remove the source"
            )
        if spec["kind"] == "hub" and "revision" not in spec and not (workdir / spec["path"]).is_dir():
            raise ConfigError(
                f"config key '{where}.revision': required for hub dataset {spec['path']!r}: pin the commit sha "
                "(the dataset page's 'History' lists them) so every rerun reads the same records"
            )
        if spec["kind"] == "installed":
            _check_installed(where, spec)
        elif spec["kind"] != "world":
            _check_template(where, spec)
        _check_documents(where, spec, config["calibration"])


def _check_builders(config: dict) -> None:
    sources = list(config["calibration"]["sources"])
    calibration = config["calibration"]
    for key, spec in calibration["builders"].items():
        where = f"calibration.builders.{key}"
        if key in sources:
            raise ConfigError(f"config key '{where}': {key!r} is also a source; a builder needs a name of its own")
        allowed = builder_knobs(spec["kind"])
        stray = [k for k in spec if k != "kind" and k not in allowed]
        if stray:
            raise ConfigError(
                f"config key '{where}.{stray[0]}': a {spec['kind']} builder does not read {stray[0]!r}. "
                f"Its knobs: {', '.join(sorted(allowed))}"
            )
        if spec.get("prefix_source") is not None and spec["prefix_source"] not in sources:
            raise ConfigError(
                f"config key '{where}.prefix_source': {spec['prefix_source']!r} is not a calibration source. "
                f"Choose from: {', '.join(sources)}"
            )
        if spec["kind"] == "mix":
            named = spec.get("sources") or []
            unknown = [s for s in named if s not in sources]
            if unknown:
                raise ConfigError(
                    f"config key '{where}.sources': {', '.join(map(repr, unknown))} "
                    f"{'is not a calibration source' if len(unknown) == 1 else 'are not calibration sources'}. "
                    f"Choose from: {', '.join(sources)}"
                )
            continue
        _check_pool(where, spec, calibration)


def _check_pool(where: str, spec: dict, calibration: dict) -> None:
    """The pool sizes the DAG computes (calmix.calibration.builders), and room for SGS's prompts."""
    kind = builders.KINDS[spec["kind"]]
    generation = {k: spec.get(k, v) for k, v in kind.generation.items()}
    selection = {k: spec.get(k, v) for k, v in kind.selection.items()}
    try:
        kind.pool_size(calibration["nsamples"], generation, selection)
    except ValueError as e:
        raise ConfigError(f"config key '{where}.pool_size': {e}") from None
    prefix = generation.get("prefix_tokens")
    if prefix is not None and prefix > calibration["seqlen"] - 2:
        raise ConfigError(
            f"config key '{where}.prefix_tokens': a prompt of BOS + {prefix} tokens leaves no token to generate in a "
            f"window of calibration.seqlen = {calibration['seqlen']}; use at most {calibration['seqlen'] - 2}"
        )


def _check_models(config: dict, workdir: Path) -> None:
    for key, spec in config["models"].items():
        _check_kind_keys(f"models.{key}", "model", spec)
        if spec["kind"] == "local" and not (workdir / spec["path"] / "config.json").is_file():
            raise ConfigError(
                f"config key 'models.{key}.path': {spec['path']!r} is not a save_pretrained folder "
                "(no config.json found there); point it at the folder that holds config.json"
            )
        if spec["kind"] == "gguf":
            _check_gguf(f"models.{key}", spec, workdir)


def _check_prunable(config: dict, workdir: Path) -> None:
    """A local model calmix cannot prune (decoder weights neither nn.Linear nor Conv1D) is refused from its
    config.json, built on the meta device (calmix.pruning.capture.check_prunable_folder), before any job.
    LLaMA-like models are linear by construction, so only other local models pay for importing torch."""
    for name, spec in config["models"].items():
        folder = workdir / spec.get("path", "")
        if spec["kind"] != "local" or not (folder / "config.json").is_file():
            continue
        try:
            model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        except ValueError:
            continue  # transformers says what is wrong with it when the model loads
        if model_type in LLAMA_LIKE:
            continue
        from calmix.pruning.capture import check_prunable_folder
        from calmix.pruning.masks import PruningError

        try:
            check_prunable_folder(folder)
        except (PruningError, ValueError) as exc:
            raise ConfigError(f"config key 'models.{name}.path': {exc}") from None


def _check_gguf(where: str, spec: dict, workdir: Path) -> None:
    origin = gguf_origin(spec)
    if origin == "package" and "path" in spec:
        raise ConfigError(f"config key '{where}.path': a GGUF file comes from a package or a hub repository, not both; "
                          "drop 'path' (the repository) or 'package'")
    if origin == "package":
        from calmix.fetch.packages import split_pin

        try:
            split_pin(spec["package"])
        except ValueError as e:
            raise ConfigError(f"config key '{where}.package': {e}") from None
    if origin == "hub" and "revision" not in spec:
        raise ConfigError(f"config key '{where}.revision': required for GGUF file {spec['file']!r} of hub repository "
                          f"{spec['path']!r}: pin the commit sha")
    if origin != "local" and "sha256" not in spec:
        raise ConfigError(f"config key '{where}.sha256': required for GGUF file {spec['file']!r} of {origin} "
                          f"{spec.get('package') or spec['path']!r}: pin the file's sha256 (sha256sum <file>)")
    if origin == "local" and not (workdir / spec["file"]).is_file():
        raise ConfigError(f"config key '{where}.file': {spec['file']!r} is not a file; give the path of a .gguf file "
                          "(or 'package' / 'path' to fetch it)")


def _check_world_model(config: dict) -> None:
    """The world's LLaMA must be buildable: heads split hidden_size evenly into an even head_dim (RoPE
    rotates pairs of dimensions), and training windows fit its positions."""
    if not any(spec["kind"] == "world" for spec in config["models"].values()):
        return
    arch, train = config["world"]["model"], config["world"]["train"]
    hidden, heads = arch["hidden_size"], arch["num_heads"]
    if hidden % heads:
        raise ConfigError(
            f"config key 'world.model.hidden_size': {hidden} is not a multiple of world.model.num_heads = {heads}, so "
            f"the heads cannot split it; use e.g. {2 * heads * max(1, round(hidden / (2 * heads)))}"
        )
    if (hidden // heads) % 2:
        raise ConfigError(
            f"config key 'world.model.num_heads': {heads} heads give a head dimension of {hidden // heads}, but rotary "
            f"embeddings need an even one; choose num_heads so that hidden_size / num_heads is even"
        )
    if train["seqlen"] > arch["max_position_embeddings"]:
        raise ConfigError(
            f"config key 'world.train.seqlen': {train['seqlen']} tokens exceed world.model.max_position_embeddings = "
            f"{arch['max_position_embeddings']}; lower it or raise max_position_embeddings"
        )


def _check_context(config: dict, facts: dict) -> None:
    """Calibration windows fit every model whose context length is known (a hub model's is not, yet)."""
    seqlen = config["calibration"]["seqlen"]
    for model, known in facts.items():
        if known and known["max_positions"] and seqlen > known["max_positions"]:
            raise ConfigError(
                f"config key 'calibration.seqlen': {seqlen} tokens exceed the {known['max_positions']} positions of "
                f"model {model!r} ({known['positions_key']}); lower calibration.seqlen to at most "
                f"{known['max_positions']}"
            )


def _pruning_grids(config: dict) -> list[tuple[str, dict]]:
    """(config key, block) of each grid of pruning settings: pruning, and each pruning.compare grid as a
    whole block (calmix.pruning.plan fills in what it does not set)."""
    grids = [(f"pruning.compare[{i}]", grid) for i, grid in enumerate(plan.compare_grids(config["pruning"]))]
    return [("pruning", config["pruning"]), *grids]


def _check_structures(config: dict, facts: dict) -> None:
    """N:M groups run along the inputs: every in_features, and SparseGPT's blocksize, a multiple of M."""
    for _, pruning in _pruning_grids(config):
        _check_block_structures(pruning, facts)


def _check_block_structures(pruning: dict, facts: dict) -> None:
    for structure in pruning["structures"]:
        if structure == "unstructured":
            continue
        m = int(structure.split(":")[1])
        if "sparsegpt" in pruning["methods"] and pruning["blocksize"] % m:
            raise ConfigError(
                f"config key 'pruning.blocksize': {pruning['blocksize']} is not a multiple of {m}, which structure "
                f"{structure!r} needs (a SparseGPT block holds whole groups of {m}); use e.g. {m * max(1, pruning['blocksize'] // m)}"
            )
        for model, known in facts.items():
            for key, size in (known or {}).get("inputs", {}).items():
                if size and size % m:
                    raise ConfigError(
                        f"config key '{key if key.startswith('world.') else f'models.{model}.path'}': {key} = {size} is not "
                        f"a multiple of {m}, which structure {structure!r} needs (inputs come in groups of {m}); "
                        f"use a multiple of {m} or drop {structure!r}"
                    )


def _pruned_layers(config: dict, known: dict | None) -> int | None:
    """How many of a model's decoder layers pruning.skip leaves something to prune in (all of them where
    its linears cannot be named), or None where its layer count is not known before the job."""
    if not known or not known.get("layers"):
        return None
    if not known["linears"]:
        return known["layers"]
    pruned = {n.split(".")[2] for n in known["linears"] if not any(fnmatch(n, p) for p in config["pruning"]["skip"])}
    return len(pruned)


def _check_profiles(config: dict, facts: dict) -> None:
    """A non-uniform profile spreads unstructured targets, and each profile's own limits (registry), for
    every model with as many pruned decoder layers as it has (OWL's spread grows with them)."""
    layers = {model: _pruned_layers(config, known) for model, known in facts.items()}
    for where, pruning in _pruning_grids(config):
        for name in pruning["profiles"]:
            profile = registry.PROFILES[name]
            if profile.module and "unstructured" not in pruning["structures"]:
                raise ConfigError(
                    f"config key '{where}.profiles': {name!r} spreads unstructured targets over the layers, but "
                    f"{where}.structures has no 'unstructured' (N:M is the same in every layer); add it or drop the profile"
                )
            for problem in [profile.problem(pruning, None, None),
                            *(profile.problem(pruning, n, model) for model, n in layers.items() if n)]:
                if problem:
                    raise ConfigError(problem)


def _check_compare(config: dict) -> None:
    """pruning.compare grids name calibration sets and seeds the study has."""
    calibration = config["calibration"]
    calibs = [*calibration["sources"], *calibration["builders"]]
    for g, grid in enumerate(config["pruning"].get("compare", [])):
        where = f"pruning.compare[{g}]"
        for i, calib in enumerate(grid.get("calibrations", [])):
            if calib not in calibs:
                raise ConfigError(f"config key '{where}.calibrations[{i}]': {calib!r} is not a calibration source "
                                  f"or builder. Choose from: {', '.join(calibs)}")
        for i, seed in enumerate(grid.get("seeds", [])):
            if seed not in calibration["seeds"]:
                raise ConfigError(f"config key '{where}.seeds[{i}]': {seed} is not one of calibration.seeds "
                                  f"{calibration['seeds']}; add it there or pick one of them")


def _check_skip(config: dict, facts: dict) -> None:
    """pruning.skip matched as calmix.pruning.driver matches it: each pattern must match a linear layer (else a
    typo), and the patterns must leave each model something to prune (else the 'pruned' checkpoint is
    the dense model). Checked where the linear names can be derived without loading the model."""
    patterns = config["pruning"]["skip"]
    named = {model: known["linears"] for model, known in facts.items() if known and known["linears"]}
    if not patterns or not named:
        return
    if len(named) == len(config["models"]):
        every = [n for names in named.values() for n in names]
        for i, pattern in enumerate(patterns):
            if not any(fnmatch(n, pattern) for n in every):
                never = " (lm_head and the embeddings are never pruned)" if fnmatch("lm_head", pattern) else ""
                raise ConfigError(
                    f"config key 'pruning.skip[{i}]': {pattern!r} matches no linear layer{never}; names look like "
                    f"{every[0]} (fnmatch patterns, e.g. '*.mlp.down_proj'). Fix or remove it"
                )
    for model, names in named.items():
        if all(any(fnmatch(n, p) for p in patterns) for n in names):
            raise ConfigError(
                f"config key 'pruning.skip': {patterns} skip all {len(names)} linear layers of model {model!r}, so it "
                "would stay dense; skip fewer layers"
            )


@functools.lru_cache(maxsize=None)
def _task_config(task: str) -> dict:
    """A world task's YAML (its !function tags kept as text)."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    return yaml.load((TASK_DIR / f"{task}.yaml").read_text(), Loader=Loader) or {}  # noqa: S506 (a SafeLoader)


def _shot_pool(task: str, items: int) -> int | None:
    """How many items a shipped task can draw shots from: None when it takes none (rolling likelihood);
    with fewshot_split == test_split lm-eval draws num_fewshot + 1 and drops the item itself, so one
    less than the items. 'limit' does not shrink the pool: shots come from the whole split."""
    spec = _task_config(task)
    if spec.get("output_type") == "loglikelihood_rolling":
        return None
    return items - 1 if spec.get("fewshot_split") == spec.get("test_split") else items


def _item_count(task: str, config: dict) -> tuple[int | None, str]:
    """How many items a shipped task has, where that is known before any job runs, and what sets it:
    the world's tasks world.eval_items, an offline builder its spec; None for items read from packages."""
    from calmix.evaluation.offline import item_count
    from calmix.evaluation.tasks import items_spec

    spec = items_spec(task, TASK_DIR)
    if spec is not None:
        return item_count(task, spec), f"its YAML's metadata.calmix_items ({spec['builder']})"
    if task.startswith("world_"):
        return config["world"]["eval_items"], "world.eval_items"
    return None, ""


def _task_shots(spec: dict, task: str) -> tuple[int, str]:
    """A shipped task's shots in a dimension, as the harness takes them (task_num_fewshot, else the
    dimension's num_fewshot, else its own YAML's), and the dimension's key that sets (or would override) them."""
    if spec.get("num_fewshot") is not None and task not in spec.get("task_num_fewshot", {}):
        return spec["num_fewshot"], "num_fewshot"
    own = _task_config(task).get("num_fewshot") or 0
    return spec.get("task_num_fewshot", {}).get(task, own), f"task_num_fewshot.{task}"


def _check_dimensions(config: dict) -> None:
    from calmix.evaluation.tasks import TaskNameError, executes_code, shipped_tasks, unknown_task_message

    shipped = set(shipped_tasks(TASK_DIR))
    for dim, spec in config["evaluation"]["dimensions"].items():
        where = f"evaluation.dimensions.{dim}"
        if dim in RESERVED_DIMENSIONS:
            raise ConfigError(
                f"config key '{where}': {dim!r} is a name the retention tables give the mean over all dimensions "
                "(calmix.analysis.retention.TOTAL); name the dimension otherwise"
            )
        for i, task in enumerate(spec["tasks"]):
            try:
                unknown = unknown_task_message(task, TASK_DIR)
            except TaskNameError as err:
                raise ConfigError(f"config key '{where}.tasks[{i}]': {err}") from None
            if unknown:
                raise ConfigError(f"config key '{where}.tasks[{i}]': {unknown}")
            if executes_code(task, TASK_DIR) and not config["evaluation"]["allow_code_execution"]:
                raise ConfigError(
                    f"config key '{where}.tasks[{i}]': lm-eval task {task!r} executes the code "
                    "the model writes. Set evaluation.allow_code_execution: true to run it (on a machine where "
                    "running untrusted code is acceptable), or remove the task"
                )
            count, counted_by = _item_count(task, config) if task in shipped else (None, "")
            pool = None if count is None else _shot_pool(task, count)
            if pool is None:  # lm-eval's own tasks and items built from packages: the evaluation job checks
                continue
            shots, key = _task_shots(spec, task)
            if shots > pool:
                raise ConfigError(
                    f"config key '{where}.{key}': {shots} shots cannot be drawn for {task}, which has "
                    f"{counted_by} = {count} items and draws each item's shots from the other {pool}; lower "
                    f"{key} to at most {pool}" + (" or raise world.eval_items" if counted_by == "world.eval_items" else "")
                )
        for key in ("metric", "task_limits", "task_num_fewshot"):
            for task in spec.get(key, {}):
                if task not in spec["tasks"]:
                    raise ConfigError(
                        f"config key '{where}.{key}.{task}': {task!r} is not a task of this "
                        f"dimension. Its tasks: {', '.join(spec['tasks'])}"
                    )


def _check_metrics(config: dict) -> None:
    from calmix.calibration.metrics import METRICS

    for i, name in enumerate(config["metrics"]):
        if name not in METRICS:
            raise ConfigError(f"config key 'metrics[{i}]': unknown metric {name!r}. Choose from: {', '.join(METRICS)}")


def check_semantics(config: dict, workdir: Path) -> None:
    """What the schema cannot say: keys read by other kinds, names that must exist, and values beyond what
    the models or data can give. Models first: later checks read what is known of them."""
    _check_models(config, workdir)
    _check_prunable(config, workdir)
    _check_world_model(config)
    _check_sources(config, workdir)
    _check_builders(config)
    sources = list(config["calibration"]["sources"])
    baseline = config["report"]["baseline"]
    if baseline is not None and baseline not in sources:
        raise ConfigError(f"config key 'report.baseline': {baseline!r} is not a calibration source. "
                          f"Choose from: {', '.join(sources)}")
    for i, control in enumerate(config["report"]["controls"]):
        if control not in sources:
            raise ConfigError(f"config key 'report.controls[{i}]': {control!r} is not a calibration source. "
                              f"Choose from: {', '.join(sources)}")
    facts = {model: model_facts(model, config, workdir) for model in config["models"]}
    _check_context(config, facts)
    _check_structures(config, facts)
    _check_profiles(config, facts)
    _check_compare(config)
    _check_skip(config, facts)
    _check_metrics(config)
    _check_dimensions(config)
