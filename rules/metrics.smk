# OIT information metrics of every calibration set and seed, and the table that gathers them.


rule metrics:  # one job per calibration set: its seeds' shards scored with one model load
    input:
        shards=expand("results/shards/{{model}}/{{calib}}/seed{seed}.parquet", seed=SEEDS),
        model=lambda wc: model_dir(wc.model),
    output:
        expand("results/metrics/{{model}}/{{calib}}/seed{seed}.json", seed=SEEDS),
    params:
        code=library_code("metrics.py"),
        metrics=config["metrics"],
        seeds=SEEDS,
        batch_size=config["calibration"]["metrics_batch_size"],
        dtype=lambda wc: config["models"][wc.model]["dtype"],
        model_manifest=lambda wc: required_manifest(wc.model),
        device=DEVICE,
    resources:
        gpu=GPU,
        mem_mb=lambda wc, input: model_mem_mb(wc.model, input.size_mb),
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/metrics/{model}/{calib}.log",
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
