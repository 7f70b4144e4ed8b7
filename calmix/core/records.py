"""The shape of every manifest and report the workflow writes: one TypedDict per JSON file.

Writers build these dicts and readers index them; the types here are the one place their keys are
listed. A TypedDict is a plain dict at run time, so annotating with them changes no byte on disk
(``calmix.core.io.write_json`` sorts keys anyway). Keys only some writers set are ``NotRequired``.

=========================================================  ==================
File                                                       Record
=========================================================  ==================
results/corpora/{calib}.json, results/world/pretrain.json  CorpusManifest
results/tokens/{model}/{calib}.json                        TokenManifest
results/shards/{model}/{calib}/seed{seed}.json             ShardManifest
results/pools/{model}/{calib}/seed{seed}.json              PoolManifest
results/models/{model}/training.json                       TrainingManifest
results/models/{model}.json                                FetchManifest
results/downloads/{model}.json                             GgufFetchManifest
results/models/{model}/conversion.json                     ConversionManifest
results/eval/data/{dimension}.json                         TaskDataManifest
results/eval/heldout_check.json                            HeldoutCheckRecord
results/metrics/{model}/{calib}/seed{seed}.json            MetricsRecord
results/pruned/.../prune_report.json                       PruneReport
results/eval/.../{dimension}.json                          EvalRecord
=========================================================  ==================

Light on purpose: it imports nothing but ``typing``, so Snakefiles, calmix-verify and jobs that
read a manifest without a deep-learning stack can import it. No ``from __future__ import
annotations`` either: on Python 3.11 a TypedDict with string annotations counts NotRequired
keys as required.
"""

from typing import Any, Literal, NotRequired, TypedDict, Union

#: {safetensors file name: sha256} of a checkpoint's weights (calmix.core.integrity.weights_sha256).
WeightsSha256 = dict[str, str]

#: A window's piece of one document: ``[doc, start, end]`` token indices (``[-1, 0, 0]``: no document).
Span = list[int]


# --------------------------------------------------------------------------------------------
# Corpora
# --------------------------------------------------------------------------------------------


class CorpusFile(TypedDict):
    """One file of a local source, in a corpus manifest's ``files``."""

    path: str
    sha256: str


class CorpusProvenance(TypedDict, total=False):
    """Where a source's documents came from: calmix.calibration.corpora.load_documents returns it
    beside the documents, and the corpus manifest holds its keys. Which keys depends on the kind."""

    # kind world
    world_seed: int
    sample_seed: int  # only the world's pretraining corpus (scripts/world_corpus.py): the seed it samples with
    # kind local
    files: list[CorpusFile]  # every matched file, in the order read
    # kind installed (files also: every read file as <package>/<path>)
    packages: dict[str, str]  # distribution -> installed version ('python': the interpreter's)
    unreadable: list[str]  # matched files that are not UTF-8, not Python 3 or not YAML, skipped
    # kind hub
    dataset: str  # hub id, or a dataset folder on disk
    config: str | None  # the dataset's config name (spec ``name``)
    split: str
    data_files: Any  # spec ``data_files`` as given (None, a path, a list or a split mapping)
    revision: str | None  # as configured; None for a dataset folder on disk
    resolved_revision: str | None  # the commit the revision pointed to (None: the hub could not be asked); absent for a folder


class CorpusManifest(CorpusProvenance):
    """results/corpora/{calib}.json (and results/world/pretrain.json): calmix.calibration.corpora.write_corpus."""

    source: str  # the calibration source's name ("pretrain" for the world's pretraining corpus)
    spec: dict[str, Any]  # the source's config
    documents: int
    chat: bool  # some documents are chat messages (a chat_field, or a chat extract of an installed source)
    first_id: str  # record id of the first document (file:line, split:row or generator:index)
    last_id: str
    sha256: str  # of the .jsonl


# --------------------------------------------------------------------------------------------
# Token files and shards
# --------------------------------------------------------------------------------------------


class TokenProvenance(TypedDict):
    """What scripts/tokenize_corpus.py hands calmix.calibration.shards.write_tokens to record."""

    source: str
    corpus_sha256: str  # of the .jsonl the documents were read from
    tokenizer_sha256: str  # calmix.models.tokenizer.tokenizer_hash
    bos_id: int | None
    eos_id: int | None


class TokenManifest(TokenProvenance):
    """results/tokens/{model}/{calib}.json: calmix.calibration.shards.write_tokens (scripts/tokenize_corpus.py)."""

    documents: int
    tokens: int  # over all documents, no special tokens
    sha256: str  # of the .parquet


class SgsPrompts(TypedDict):
    """How SGS drew its prompts (calmix.calibration.selfgen.sgs_prompts), in a pool manifest's ``prompts``."""

    prefix_tokens: int
    bos: bool  # a BOS precedes each prompt
    documents: int  # documents of the prefix source
    eligible_documents: int  # those with at least prefix_tokens tokens
    with_replacement: bool
    prompt_documents: list[int]  # the document index of every prompt


class SamplingRecord(TypedDict):
    """The sampling a pool was generated with (calmix.calibration.selfgen._sampling_record)."""

    temperature: float | dict[str, Any]  # fixed, or TemperatureSchedule.record(): kind, t_initial, t_final, schedule_tokens
    top_k: int | None
    top_p: float | None
    repetition_penalty: float | None
    eos: str  # "banned": no candidate ends early


class PoolGeneration(TypedDict):
    """What calmix.calibration.selfgen.generate_pool records about the pool it generated."""

    builder: str  # "selfcal", "sgs" or "igsp"
    seed: int
    pool_size: int
    seqlen: int
    sampling: SamplingRecord
    prompts: NotRequired[SgsPrompts]  # SGS only
    perplexity_over: NotRequired[str]  # SGS only: which tokens the perplexity scores cover
    start_token: NotRequired[str]  # Self-Cal and IGSP: "bos", or "eos" for a tokenizer without BOS


class PoolProvenance(PoolGeneration):
    """A pool manifest less its ``scores``: what a selected shard records under ``pool`` (scripts/select_windows.py)."""

    knobs: dict[str, Any]  # the builder's generation knobs, resolved (calmix.calibration.builders: KINDS, self_generation)
    name: str  # the builder's calibration-set name
    sha256: str  # of the pool's .parquet


class PoolManifest(PoolProvenance):
    """results/pools/{model}/{calib}/seed{seed}.json: calmix.calibration.pools.write_pool (scripts/generate_pool.py)."""

    scores: list[str]  # the score columns of the .parquet, sorted (perplexity, ngram4_aggregation)


class ShardManifest(TypedDict):
    """results/shards/{model}/{calib}/seed{seed}.json: calmix.calibration.shards.write_shard, by way of
    shards.build_shard (a source; scripts/shard.py), mix.build_mix (scripts/mix.py) or scripts/select_windows.py."""

    source: str  # the calibration set's name: a source, a mix or a self-generated builder
    seed: int
    nsamples: int
    seqlen: int
    sha256: str  # of the .parquet
    kind: NotRequired[str]  # built sets: "mix", "selfcal", "sgs" or "igsp"; absent for a source's shard
    spec: NotRequired[dict[str, Any]]  # sources and mixes: the config it was built from (a mix's with its weights)
    # Sampled from a source (build_shard)
    sampling: NotRequired[str]  # "windows" or "documents"
    bos: NotRequired[str]  # BOS policy: "none", "document" or "window"
    placement: NotRequired[str]  # "documents" or "stream" (windows sampling), "packed" (documents sampling)
    corpus_documents: NotRequired[int]
    corpus_tokens: NotRequired[int]
    tokens_sha256: NotRequired[str]  # of the token file sampled from
    tokenizer_sha256: NotRequired[str]
    # Sources and mixes
    windows: NotRequired[list[list[Span]]]  # per window, the spans it joins (by EOS)
    record_ids: NotRequired[list[list[str | None]]]  # per window, the record id of each span's document (None for [-1, 0, 0])
    # Mixes (build_mix)
    weights: NotRequired[dict[str, float]]
    counts: NotRequired[dict[str, int]]  # windows drawn per source
    source_shards: NotRequired[dict[str, str]]  # sha256 of each source shard drawn from
    window_sources: NotRequired[list[list[Any]]]  # per window, [source, its index in that source's shard]
    # Self-generated (scripts/select_windows.py, from calmix.calibration.selection.select_windows)
    selection_knobs: NotRequired[dict[str, Any]]  # resolved (calmix.calibration.builders: KINDS, self_generation)
    pool: NotRequired[PoolProvenance]
    selection: NotRequired[dict[str, Any]]  # the selection record of calmix.calibration.selection (select_selfcal, select_sgs or select_igsp)
    pool_indices: NotRequired[list[int]]  # per window, its candidate in the pool
    window_perplexity: NotRequired[list[float]]
    window_ngram4_aggregation: NotRequired[list[float]]


class MetricsRecord(TypedDict):
    """results/metrics/{model}/{calib}/seed{seed}.json: scripts/metrics.py.

    Beside these keys it holds one float per configured metric, named as in
    calmix.calibration.metrics.METRICS (a TypedDict cannot list keys chosen by the config).
    """

    model: str
    calib: str
    seed: int


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class TrainingSummary(TypedDict):
    """What calmix.world.training.train_model returns."""

    parameters: int
    train_tokens: int  # length of the pretraining token stream
    steps: int
    final_loss: float  # mean training loss of the last 50 steps
    wall_time_s: float
    threads: int  # torch threads (world.train.threads)
    kernels: dict[str, str]  # the CPU kernels it computed with: calmix.core.kernels.in_use()


class TrainingManifest(TrainingSummary):
    """results/models/{model}/training.json: calmix.models.loading.write_checkpoint_manifest (scripts/train_world_model.py)."""

    weights_sha256: WeightsSha256


class FetchManifest(TypedDict):
    """results/models/{model}.json: scripts/fetch_model.py (a hub model's snapshot in the Hugging Face cache)."""

    repo: str
    revision: str  # as configured (a branch, tag or sha)
    resolved_revision: str  # the snapshot's commit sha
    path: str  # the snapshot folder; calmix.models.folders.model_folder loads from it
    bytes: int  # size of the snapshot's files; rules/common.smk sizes jobs' memory by it
    weights_sha256: WeightsSha256  # hashed when fetched: the model's identity in every key (calmix.models.folders.model_identity)


class GgufFetchManifest(TypedDict, total=False):
    """results/downloads/{model}.json: scripts/fetch_gguf.py (a GGUF file from a registry package or the hub),
    and the ``source`` of a conversion manifest (for a local file: its path and sha256 only)."""

    file: str  # as configured: the file's name in the package or repository, or a local path
    sha256: str  # the file's, checked against the pinned one
    bytes: int
    # from a package
    package: str  # name==version
    wheel: str  # the wheel's file name
    wheel_sha256: str
    member: str  # the file's path inside the wheel
    # from the hub
    repo: str
    revision: str
    resolved_revision: str
    # a local file
    pinned: bool  # whether models.<name>.sha256 pins it (unpinned: the convert job warns)


class GgufFacts(TypedDict):
    """What a GGUF file says of itself (calmix.models.gguf.gguf_metadata)."""

    architecture: str | None
    name: str | None
    tensors: int
    tensor_types: list[str]  # quantization types of its tensors (Q4_1, Q8_0, F32, ...)


class ConversionSummary(TypedDict):
    """What calmix.models.gguf.convert_gguf returns."""

    gguf: GgufFacts
    model_type: str
    num_layers: int
    parameters: int
    vocab_size: int
    chat_template: bool  # the tokenizer carries a chat template
    converted_by: dict[str, str]  # versions of transformers and gguf


class ConversionManifest(ConversionSummary):
    """results/models/{model}/conversion.json: scripts/convert_gguf.py (a GGUF file dequantized to safetensors)."""

    source: GgufFetchManifest
    weights_sha256: WeightsSha256


class TaskItemsManifest(TypedDict, total=False):
    """results/eval/items/{task}.json: scripts/task_items.py (a task's items built offline,
    calmix.evaluation.offline); which provenance keys it has depends on the builder."""

    task: str
    spec: dict[str, Any]  # the YAML's metadata.calmix_items
    items: int
    sha256: str  # of the items' jsonl
    # humaneval*, heldout_text: distributions and the files read
    packages: dict[str, str]
    files: list[CorpusFile]
    unreadable: list[str]
    # arithmetic
    generator: str
    seed: int
    # package_dataset: the wheel pinned by its sha256
    package: str
    wheel: str
    wheel_sha256: str


class HeldoutTaskCheck(TypedDict):
    """One held-out text task in a held-out check's ``tasks``."""

    items: int
    windows: int  # its items' windows, every one looked for in every calibration document


class HeldoutCheckRecord(TypedDict):
    """results/eval/heldout_check.json: scripts/heldout_check.py (calmix.calibration.contamination.check_heldout),
    written only when no item of a held-out text task overlaps a calibration document."""

    window: int  # words per window
    tasks: dict[str, HeldoutTaskCheck]
    sources: dict[str, int]  # documents read per calibration source


class TaskDataset(TypedDict):
    """Where one lm-eval leaf task's data comes from, in a task-data manifest's ``leaves``."""

    dataset: str | None
    config: str | None
    revision: str | None


class TaskDataManifest(TypedDict):
    """results/eval/data/{dimension}.json: calmix.fetch.task_data.fetch_task_data (scripts/fetch_task_data.py)."""

    tasks: list[str]  # the dimension's built-in tasks, as configured
    leaves: dict[str, TaskDataset]  # by leaf task (a group's subtasks)
    lm_eval: str  # lm-eval's version


# --------------------------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------------------------


class LayerEntry(TypedDict):
    """One decoder-layer linear in a prune report's ``layers`` (calmix.pruning.driver, per layer), in module order."""

    name: str  # full module name, e.g. model.layers.0.self_attn.q_proj
    numel: int
    zeros: int
    sparsity: float  # zeros / numel after pruning
    skipped: bool  # left dense by pruning.skip
    target_sparsity: float | None  # its layer's target (one for all under a uniform profile); None when skipped
    stats_group: str | None  # leader of the linears sharing its statistic; None for a data-free method
    nm_valid: bool | None  # every aligned group of M has >= N zeros; None when unstructured
    recon_error: float | None  # ||(W - W')X||^2 / ||WX||^2 from the Hessian; None without one or when skipped
    damping: NotRequired[float]  # SparseGPT: the relative damping its Cholesky factorisation needed
    alpha: NotRequired[float]  # cumulative Wanda: the matrix's threshold on the per-row cumulative scores


class SparsityCount(TypedDict):
    """Exact zeros over a set of weights: a prune report's ``total``."""

    numel: int
    zeros: int
    sparsity: float  # zeros / numel (0.0 for no weights)


class SparsityProfile(TypedDict):
    """How the target was spread over the decoder layers: a prune report's ``profile``."""

    name: str  # "uniform" or "owl" (calmix.pruning.registry.PROFILES)
    owl_m: NotRequired[float]  # OWL's knobs
    owl_lmbda: NotRequired[float]
    outlier_ratios: NotRequired[list[float | None]]  # a non-uniform profile: per decoder layer; None if skipped whole
    layer_sparsities: NotRequired[list[float | None]]  # a non-uniform profile: each layer's target; None if skipped whole


class PruneModelReport(TypedDict):
    """What calmix.pruning.driver.prune_model returns; prune_report.json is this plus PruneReport's keys."""

    method: str  # "sparsegpt", "wanda" or "magnitude"
    statistic: str | None  # "hessian", "sq_norms", or None for a data-free method
    sparsity: float  # the target asked for (N:M: ignored, the sparsity is N/M)
    prunen: int  # N of N:M; 0 when unstructured
    prunem: int  # M of N:M; 0 when unstructured
    cumulative: bool  # cumulative Wanda, as applied
    profile: SparsityProfile
    true_sequential: bool
    skip: list[str]  # fnmatch patterns of linears left dense
    nsamples: int | None  # calibration windows; None when no data is used
    seqlen: int | None
    ntokens: int | None
    layers: list[LayerEntry]
    total: SparsityCount  # over all decoder-layer linears, skipped ones included
    wall_time_s: float
    peak_memory_mb: float
    peak_memory_kind: Literal["cuda_max_allocated", "process_peak_rss"]  # rss: the process's lifetime peak


class VerifiedSparsity(TypedDict):
    """The reloaded checkpoint's check (calmix.pruning.checkpoints._verify): a prune report's ``verified``."""

    sparsity: float  # mean over the pruned linears
    layers_checked: int
    nm_valid: NotRequired[bool]  # N:M targets only (always True: a violation is an error)


class PruneReport(PruneModelReport):
    """results/pruned/{model}/{method}/{target}/{calib}/seed{seed}/prune_report.json:
    calmix.pruning.checkpoints.prune_checkpoint, through calmix.models.loading.write_checkpoint_manifest."""

    target: str  # target label: "0.6" or "2:4"
    shard: str | None  # the calibration shard's path; None for a data-free method
    shard_sha256: str | None
    dense_model: str  # what the dense model was loaded from
    verified: VerifiedSparsity
    prune_key: str | None  # calmix.pruning.checkpoints.prune_key: what the weights are valid for
    job_wall_time_s: float  # load, prune, save, reload and verify
    weights_sha256: WeightsSha256


#: A checkpoint's manifest (calmix.core.integrity.CHECKPOINT_MANIFESTS).
CheckpointManifest = Union[TrainingManifest, ConversionManifest, PruneReport]


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


class TaskSummary(TypedDict):
    """One task's score in an eval record's ``tasks`` (calmix.evaluation.harness: _leaf_summary, _group_summary)."""

    metric: str  # the "metric,filter" key that stands for the task, e.g. "acc,none"
    num_fewshot: int  # shots before each item, as scored (the task YAML's unless the dimension sets them; 0: rolling)
    score: float | None
    stderr: float | None
    chance: float | None  # expected score of guessing; None for perplexity metrics and other output types
    n: int | None  # items scored
    output_type: str  # lm-eval's: multiple_choice, generate_until, loglikelihood_rolling, ...
    higher_is_better: bool
    aggregation: Literal["mean", "perplexity"]  # perplexity: exp(-sum(item score) / sum(item weight))
    subtasks: NotRequired[list[str]]  # a group or tag: its leaf tasks, sorted


class EvalSettings(TypedDict):
    """The harness settings an evaluation ran with: an eval record's ``settings``."""

    model_path: str  # the folder loaded (a hub model's snapshot)
    batch_size: int
    limit: int | None  # items per task
    seed: int
    dtype: str
    device: str
    lm_eval_version: str
    num_fewshot: int | None  # the dimension's shots for every task; None: each task's own (tasks[t].num_fewshot: as scored)
    task_num_fewshot: NotRequired[dict[str, int]]  # the dimension's shots by task, where it sets them
    metric: dict[str, str]  # the dimension's metric overrides, by task
    task_versions: dict[str, Any]  # lm-eval's version of each task (int, str, float or None)


class ItemScore(TypedDict):
    """One item's score: a row of the per-item file {dimension}.items.parquet beside an eval record."""

    task: str  # the task as configured
    leaf: str  # the lm-eval task that scored it (a subtask of a group)
    doc_id: int
    score: float  # perplexity metrics: the item's total log-likelihood
    weight: float  # 1.0 for mean metrics; words or bytes for perplexity metrics
    gold_prob: NotRequired[float]  # multiple choice: the gold choice's normalised probability (NaN in the file otherwise)


class EvalResult(TypedDict):
    """What calmix.evaluation.harness.evaluate returns; scripts/evaluate.py writes its items apart."""

    tasks: dict[str, TaskSummary]
    items: list[ItemScore]
    settings: EvalSettings


class EvalRecord(TypedDict):
    """results/eval/{model}/dense/{dimension}.json and results/eval/{model}/{method}/{target}/{calib}/seed{seed}/{dimension}.json:
    scripts/evaluate.py (calmix.evaluation.checkpoint), from calmix.evaluation.harness.evaluate's result less its items."""

    model: str
    method: str  # the pruned set's label ("wanda", "wanda-owl"), or "dense"
    sparsity: str  # target label ("0.6", "2:4"), or "dense"
    calib: str | None  # None for the dense model
    seed: int | None  # None for the dense model
    dimension: str
    evaluation_key: str  # sha256 of what the scores depend on: the record is rewritten only when it changes
    weights_sha256: WeightsSha256  # the evaluated weights (a temporary checkpoint's prune report keeps the same digest)
    tasks: dict[str, TaskSummary]  # by task (on disk sorted by name, as every key: write_json sorts keys)
    settings: EvalSettings
