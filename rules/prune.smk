# Pruning and the pruned models' evaluation: prune (verified on reload), score every dimension with
# lm-eval, and remove the checkpoint unless pruning.keep_checkpoints keeps it. Python, torch,
# transformers and lm-eval take ~5 s to start, more than pruning and scoring the world model, so one
# job does every seed of a calibration set at a main-block setting, one checkpoint after another;
# a compare grid's and a data-free method's checkpoints are one job each. Each checkpoint's prune
# report and each dimension's record carry the key they were made for (calmix.evaluation.pruned),
# hence update(): a rerun redoes only what an edit changed, seed by seed and dimension by dimension.


rule prune_and_evaluate:  # every seed of a set at a main-block setting
    input:
        unpack(pruning_inputs),
        data=lambda wc: task_data(),
    output:
        reports=update(expand("results/prune_reports/{{model}}/{{method}}/{{target}}/{{calib}}/seed{seed}.json", seed=SEEDS)),
        scores=update(expand("results/eval/{{model}}/{{method}}/{{target}}/{{calib}}/seed{seed}/{dimension}.json", seed=SEEDS, dimension=DIMENSIONS)),
        per_item=update(expand("results/eval/{{model}}/{{method}}/{{target}}/{{calib}}/seed{seed}/{dimension}.items.parquet", seed=SEEDS, dimension=DIMENSIONS)),
        checkpoints=kept_checkpoints(expand("results/pruned/{{model}}/{{method}}/{{target}}/{{calib}}/seed{seed}", seed=SEEDS)),
    wildcard_constraints:
        **MAIN_BLOCK,
    params:
        seeds=SEEDS,
        checkpoints=lambda wc: expand("results/pruned/{m}/{method}/{target}/{calib}/seed{seed}", m=wc.model, method=wc.method, target=wc.target, calib=wc.calib, seed=SEEDS),
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
        versions=STACK,
    resources:
        gpu=GPU,
        mem_mb=lambda wc, input: model_mem_mb(wc.model, input.size_mb),
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/prune_and_evaluate/{model}/{method}/{target}/{calib}.log",
    script:
        "../scripts/prune_and_evaluate.py"


use rule prune_and_evaluate as prune_and_evaluate_seed with:  # one checkpoint: a compare grid's, a data-free method's
    output:
        reports=update(["results/prune_reports/{model}/{method}/{target}/{calib}/seed{seed}.json"]),
        scores=update(expand("results/eval/{{model}}/{{method}}/{{target}}/{{calib}}/seed{{seed}}/{dimension}.json", dimension=DIMENSIONS)),
        per_item=update(expand("results/eval/{{model}}/{{method}}/{{target}}/{{calib}}/seed{{seed}}/{dimension}.items.parquet", dimension=DIMENSIONS)),
        checkpoints=kept_checkpoints(["results/pruned/{model}/{method}/{target}/{calib}/seed{seed}"]),
    wildcard_constraints:
        **ANY_CHECKPOINT,
    params:
        seeds=lambda wc: [int(wc.seed)],
        checkpoints=lambda wc: [f"results/pruned/{wc.model}/{wc.method}/{wc.target}/{wc.calib}/seed{wc.seed}"],
    log:
        "logs/prune_and_evaluate/{model}/{method}/{target}/{calib}/seed{seed}.log",


ruleorder: prune_and_evaluate > prune_and_evaluate_seed
