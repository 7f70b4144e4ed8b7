# Pruning and the pruned model's evaluation, one job per (model, method, target, calibration set, seed):
# prune (verified on reload), score every dimension with lm-eval, and remove the checkpoint unless
# pruning.keep_checkpoints keeps it. One process pays Python, torch, transformers and lm-eval's start
# once per checkpoint. The prune report and each dimension's record carry the key they were made for
# (calmix.evaluation.checkpoint), hence update(): a rerun redoes only what an edit changed.


rule prune_and_evaluate:
    input:
        unpack(pruning_inputs),
        data=lambda wc: task_data(),
    output:
        report=update("results/prune_reports/{model}/{method}/{target}/{calib}/seed{seed}.json"),
        scores=update(expand("results/eval/{{model}}/{{method}}/{{target}}/{{calib}}/seed{{seed}}/{dimension}.json", dimension=DIMENSIONS)),
        per_item=update(expand("results/eval/{{model}}/{{method}}/{{target}}/{{calib}}/seed{{seed}}/{dimension}.items.parquet", dimension=DIMENSIONS)),
        checkpoint=kept_checkpoint("results/pruned/{model}/{method}/{target}/{calib}/seed{seed}"),
    params:
        checkpoint="results/pruned/{model}/{method}/{target}/{calib}/seed{seed}",
        keep=KEEP_CHECKPOINTS,
        code=lambda wc: library_code("prune_and_evaluate.py", registry.modules(wc.method)),
        pruning_code=lambda wc: pruning_code(wc.method),
        evaluation_code=library_code("evaluate.py"),
        options=method_options,
        dimensions=lambda wc: {d: evaluation_spec(d) for d in DIMENSIONS},
        data={d: task_data(d) for d in DIMENSIONS},
        dtype=lambda wc: config["models"][wc.model]["dtype"],
        model_manifest=lambda wc: required_manifest(wc.model),
        task_dir=TASK_DIR,
        device=DEVICE,
    resources:
        gpu=GPU,
        mem_mb=lambda wc, input: model_mem_mb(wc.model, input.size_mb),
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/prune_and_evaluate/{model}/{method}/{target}/{calib}/seed{seed}.log",
    script:
        "../scripts/prune_and_evaluate.py"
