# OIT information metrics of every calibration set, and the table that gathers them.


rule metrics:
    input:
        shard="results/shards/{model}/{calib}/seed{seed}.parquet",
        model=lambda wc: model_dir(wc.model),
    output:
        "results/metrics/{model}/{calib}/seed{seed}.json",
    params:
        code=library_code("metrics.py"),
        metrics=config["metrics"],
        model_manifest=lambda wc: required_manifest(wc.model),
        device=DEVICE,
    resources:
        gpu=GPU,
        mem_mb=lambda wc, input: model_mem_mb(wc.model, input.size_mb),
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/metrics/{model}/{calib}/seed{seed}.log",
    script:
        "../scripts/metrics.py"


rule metric_table:
    input:
        expand("results/metrics/{model}/{calib}/seed{seed}.json", model=MODELS, calib=CALIBS, seed=SEEDS),
    output:
        csv=report(
            "results/tables/metrics.csv",
            caption="../report/metrics.rst",
            category="Metrics",
            labels={"table": "OIT metrics per calibration set and seed"},
        ),
        parquet="results/tables/metrics.parquet",
    params:
        code=library_code("metric_table.py"),
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/metric_table.log",
    script:
        "../scripts/metric_table.py"
