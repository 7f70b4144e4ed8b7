# Evaluation with lm-eval: a job scores every dimension of its checkpoints in one process, the dense
# model's (evaluate_dense) or a calibration set's kept pruned checkpoints at every main-block setting
# (evaluate_pruned; a temporary checkpoint is scored by the job that prunes it: rules/prune.smk); each
# dimension keeps its own record and is rescored only when its evaluation key changes
# (calmix.evaluation.checkpoint), hence update(): Snakemake leaves the records.
# Items of tasks whose YAML names an offline builder (HumanEval, arithmetic, held-out text) are
# written once per task. Every evaluation waits for the held-out check (task_data): no item of a
# held-out text task may overlap a document of any calibration source; a mix draws its windows from
# the sources' shards, so none holds one either.


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


rule heldout_check:
    input:
        heldout=[items_file(t) for t in HELDOUT_TASKS],
        corpora=expand("results/corpora/{calib}.jsonl", calib=SOURCES),
    output:
        "results/eval/heldout_check.json",
    params:
        code=library_code("heldout_check.py"),
        tasks=HELDOUT_TASKS,
        sources=SOURCES,
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/heldout_check.log",
    script:
        "../scripts/heldout_check.py"


rule evaluate_dense:
    input:
        model=lambda wc: model_dir(wc.model),
        data=lambda wc: task_data(),
    output:
        scores=update(expand("results/eval/{{model}}/dense/{dimension}.json", dimension=DIMENSIONS)),
        per_item=update(expand("results/eval/{{model}}/dense/{dimension}.items.parquet", dimension=DIMENSIONS)),
    params:
        code=library_code("evaluate.py"),
        dimensions=lambda wc: {d: evaluation_spec(d) for d in DIMENSIONS},
        data={d: task_data(d) for d in DIMENSIONS},
        dtype=lambda wc: config["models"][wc.model]["dtype"],
        model_manifest=lambda wc: required_manifest(wc.model),
        task_dir=TASK_DIR,
        device=DEVICE,
        versions=STACK,
    resources:
        gpu=GPU,
        mem_mb=lambda wc, input: model_mem_mb(wc.model, input.size_mb),
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/evaluate_dense/{model}.log",
    script:
        "../scripts/evaluate.py"


if KEEP_CHECKPOINTS:

    rule evaluate_pruned_seed:  # one kept checkpoint: a compare grid's, a data-free method's
        input:
            model=lambda wc: model_dir(wc.model),  # its identity is in every record's key
            checkpoints=lambda wc: [f"results/pruned/{wc.model}/{m}/{t}/{wc.calib}/seed{s}" for m, t, s in evaluated_checkpoints(wc)],
            data=lambda wc: task_data(),
        output:
            scores=update(pruned_records(ONE_CHECKPOINT, ".json")),
            per_item=update(pruned_records(ONE_CHECKPOINT, ".items.parquet")),
        params:
            identities=evaluated_identities,
            code=library_code("evaluate_pruned.py"),
            evaluation_code=library_code("evaluate.py"),  # in the records' key, as the dense model's and prune_and_evaluate's
            dimensions=lambda wc: {d: evaluation_spec(d) for d in DIMENSIONS},
            data={d: task_data(d) for d in DIMENSIONS},
            dtype=lambda wc: config["models"][wc.model]["dtype"],
            model_manifest=lambda wc: required_manifest(wc.model),
            task_dir=TASK_DIR,
            device=DEVICE,
            versions=STACK,
        resources:
            gpu=GPU,
            mem_mb=lambda wc, input: model_mem_mb(wc.model, input.size_mb),
        conda:
            "../envs/calmix.yaml"
        log:
            "logs/evaluate_pruned/{model}/{method}/{target}/{calib}/seed{seed}.log",
        script:
            "../scripts/evaluate_pruned.py"

    if MAIN_SETTINGS:

        use rule evaluate_pruned_seed as evaluate_pruned with:  # a set's checkpoints at every main-block setting and seed
            output:
                scores=update(pruned_records(MAIN_CHECKPOINTS, ".json")),
                per_item=update(pruned_records(MAIN_CHECKPOINTS, ".items.parquet")),
            wildcard_constraints:
                calib=MAIN_BLOCK["calib"],
            log:
                "logs/evaluate_pruned/{model}/{calib}.log",

        ruleorder: evaluate_pruned > evaluate_pruned_seed
