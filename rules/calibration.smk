# Calibration data: raw corpora per source (model-independent, fetched once), token ids per model
# and source, then one shard of windows per seed. Built sets make shards of the same form: mixes from
# the sources' shards; self-generated sets from a cached candidate pool the dense model writes.


rule corpus:
    input:
        source_files,
    output:
        corpus="results/corpora/{calib}.jsonl",
        manifest="results/corpora/{calib}.json",
    params:
        code=lambda wc: library_code("corpus.py", KIND_MODULES[source_spec(wc)["kind"]]),
        spec=source_spec,
        versions=source_versions,
        world_seed=lambda wc: world_seed_of(source_spec(wc)),
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/corpus/{calib}.log",
    script:
        "../scripts/corpus.py"


rule tokenize:
    input:
        corpus="results/corpora/{calib}.jsonl",
        model=lambda wc: model_dir(wc.model),
    output:
        tokens="results/tokens/{model}/{calib}.parquet",
        manifest="results/tokens/{model}/{calib}.json",
    params:
        code=library_code("tokenize_corpus.py"),
        model_manifest=lambda wc: required_manifest(wc.model),
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/tokenize/{model}/{calib}.log",
    script:
        "../scripts/tokenize_corpus.py"


rule shard:
    input:
        "results/tokens/{model}/{calib}.parquet",
    wildcard_constraints:
        calib=one_of(SOURCES),
    output:
        shard="results/shards/{model}/{calib}/seed{seed}.parquet",
        manifest="results/shards/{model}/{calib}/seed{seed}.json",
    params:
        code=library_code("shard.py"),
        spec=source_spec,
        sampling=sampling_of,
        nsamples=config["calibration"]["nsamples"],
        seqlen=config["calibration"]["seqlen"],
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/shard/{model}/{calib}/seed{seed}.log",
    script:
        "../scripts/shard.py"


rule mix:
    input:
        unpack(mix_shards),
    output:
        shard="results/shards/{model}/{calib}/seed{seed}.parquet",
        manifest="results/shards/{model}/{calib}/seed{seed}.json",
    wildcard_constraints:
        calib=one_of(MIXES),
    params:
        code=library_code("mix.py"),
        spec=builder_spec,
        nsamples=config["calibration"]["nsamples"],
        seqlen=config["calibration"]["seqlen"],
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/mix/{model}/{calib}/seed{seed}.log",
    script:
        "../scripts/mix.py"


rule generate_pool:
    input:
        unpack(pool_inputs),
    output:
        pool="results/pools/{model}/{calib}/seed{seed}.parquet",
        manifest="results/pools/{model}/{calib}/seed{seed}.json",
    wildcard_constraints:
        calib=one_of(SELF_GENERATED),
    params:
        code=library_code("generate_pool.py"),
        kind=lambda wc: self_generation(wc)["kind"],
        size=lambda wc: self_generation(wc)["size"],
        generation=lambda wc: self_generation(wc)["generation"],
        batch_size=lambda wc: self_generation(wc)["batch_size"],
        score_batch_size=lambda wc: self_generation(wc)["score_batch_size"],
        seqlen=config["calibration"]["seqlen"],
        dtype=lambda wc: config["models"][wc.model]["dtype"],
        model_manifest=lambda wc: required_manifest(wc.model),
        device=DEVICE,
    resources:
        gpu=GPU,
        mem_mb=lambda wc, input: model_mem_mb(wc.model, input.size_mb),
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/generate_pool/{model}/{calib}/seed{seed}.log",
    script:
        "../scripts/generate_pool.py"


rule select_windows:
    input:
        pool="results/pools/{model}/{calib}/seed{seed}.parquet",
    output:
        shard="results/shards/{model}/{calib}/seed{seed}.parquet",
        manifest="results/shards/{model}/{calib}/seed{seed}.json",
    wildcard_constraints:
        calib=one_of(SELF_GENERATED),
    params:
        code=library_code("select_windows.py"),
        kind=lambda wc: self_generation(wc)["kind"],
        selection=lambda wc: self_generation(wc)["selection"],
        nsamples=config["calibration"]["nsamples"],
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/select_windows/{model}/{calib}/seed{seed}.log",
    script:
        "../scripts/select_windows.py"
