# Pruning: one checkpoint per (model, method, sparsity, calibration set, seed), verified on reload.


rule prune:
    input:
        shard="results/shards/{model}/{calib}/seed{seed}.parquet",
        model=lambda wc: model_dir(wc.model),
    output:
        directory("results/pruned/{model}/{method}/{sparsity}/{calib}/seed{seed}"),
    params:
        blocksize=config["pruning"]["blocksize"],
        percdamp=config["pruning"]["percdamp"],
        batch_size=config["pruning"]["batch_size"],
        dtype=lambda wc: config["models"][wc.model]["dtype"],
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/prune/{model}/{method}/{sparsity}/{calib}/seed{seed}.log",
    script:
        "../scripts/prune.py"
