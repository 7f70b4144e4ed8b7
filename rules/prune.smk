# Pruning: one checkpoint per (model, method, target, calibration set, seed), verified on reload.


rule prune:
    input:
        unpack(pruning_inputs),
    output:
        directory("results/pruned/{model}/{method}/{target}/{calib}/seed{seed}"),
    params:
        code=lambda wc: library_code("prune.py", registry.modules(wc.method)),
        options=method_options,
        dtype=lambda wc: config["models"][wc.model]["dtype"],
        model_manifest=lambda wc: required_manifest(wc.model),
        device=DEVICE,
    resources:
        gpu=GPU,
        mem_mb=lambda wc, input: model_mem_mb(wc.model, input.size_mb),
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/prune/{model}/{method}/{target}/{calib}/seed{seed}.log",
    script:
        "../scripts/prune.py"
