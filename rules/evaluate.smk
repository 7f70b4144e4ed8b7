# Evaluation with lm-eval: one job per (checkpoint, dimension); the dense model once per dimension.
# Items of tasks whose YAML names an offline builder (HumanEval, arithmetic, held-out text) are
# written once per task.


rule task_items:
    output:
        jsonl="results/eval/items/{task}.jsonl",
        manifest="results/eval/items/{task}.json",
    params:
        code=library_code("task_items.py"),
        spec=lambda wc: items_spec(wc.task),
        versions=items_versions,
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/task_items/{task}.log",
    script:
        "../scripts/task_items.py"


rule evaluate_dense:
    input:
        model=lambda wc: model_dir(wc.model),
        data=lambda wc: task_data(wc.dimension),
    output:
        scores="results/eval/{model}/dense/{dimension}.json",
        per_item="results/eval/{model}/dense/{dimension}.items.parquet",
    params:
        code=library_code("evaluate.py"),
        tasks=lambda wc: config["evaluation"]["dimensions"][wc.dimension]["tasks"],
        harness=lambda wc: harness(wc.dimension),
        dtype=lambda wc: config["models"][wc.model]["dtype"],
        model_manifest=lambda wc: required_manifest(wc.model),
        task_dir=TASK_DIR,
        task_definitions=lambda wc: task_definitions(wc.dimension),
        device=DEVICE,
    resources:
        gpu=GPU,
        mem_mb=lambda wc, input: model_mem_mb(wc.model, input.size_mb),
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/evaluate_dense/{model}/{dimension}.log",
    script:
        "../scripts/evaluate.py"


use rule evaluate_dense as evaluate_pruned with:
    input:
        model="results/pruned/{model}/{method}/{target}/{calib}/seed{seed}",
        data=lambda wc: task_data(wc.dimension),
    params:
        model_manifest="prune_report.json",  # always calmix's own checkpoint: refused without it
    output:
        scores="results/eval/{model}/{method}/{target}/{calib}/seed{seed}/{dimension}.json",
        per_item="results/eval/{model}/{method}/{target}/{calib}/seed{seed}/{dimension}.items.parquet",
    log:
        "logs/evaluate_pruned/{model}/{method}/{target}/{calib}/seed{seed}/{dimension}.log",
