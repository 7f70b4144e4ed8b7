# Pruning: one checkpoint per (model, method, target, calibration set, seed), verified on reload, and
# its report kept apart: the checkpoint may be temporary (pruning.keep_checkpoints), the report stays.


rule prune:
    input:
        unpack(pruning_inputs),
    output:
        checkpoint=checkpoint_output("results/pruned/{model}/{method}/{target}/{calib}/seed{seed}"),
        report="results/prune_reports/{model}/{method}/{target}/{calib}/seed{seed}.json",
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
