# Calibration data: raw corpora per source (model-independent), then token shards per model and seed.


rule corpus:
    output:
        "results/corpora/{calib}.jsonl",
    params:
        spec=source_spec,
        world_seed=lambda wc: world_seed_of(source_spec(wc)),
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/corpus/{calib}.log",
    script:
        "../scripts/corpus.py"


rule shard:
    input:
        corpus="results/corpora/{calib}.jsonl",
        model=lambda wc: model_dir(wc.model),
    output:
        shard="results/shards/{model}/{calib}/seed{seed}.parquet",
        manifest="results/shards/{model}/{calib}/seed{seed}.json",
    params:
        spec=source_spec,
        nsamples=config["calibration"]["nsamples"],
        seqlen=config["calibration"]["seqlen"],
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/shard/{model}/{calib}/seed{seed}.log",
    script:
        "../scripts/shard.py"
