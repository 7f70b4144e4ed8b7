# Pruning, verified on reload. Python, torch and transformers take ~4 s to start (lm-eval ~1 s more),
# more than pruning and scoring the world model, so one job does every seed of a calibration set at a
# main-block setting, one checkpoint after another; a compare grid's and a data-free method's
# checkpoints are one job each (the _seed rules). Each prune report carries the prune key it was made
# for (calmix.pruning.checkpoints), each record its evaluation key (calmix.evaluation.checkpoint).
#
# Kept checkpoints (pruning.keep_checkpoints; auto: the built-in world's): rule prune makes them and
# rule evaluate_pruned (rules/evaluate.smk) scores them, so an evaluation edit (a dimension's tasks or
# settings, the evaluation code, lm-eval's version) rescores without pruning. A kept checkpoint is a
# plain directory output, not update(): Snakemake would copy it aside before every rerun (a 16 GB copy
# for 8B), and a copy left by a killed run stops the next one; a prune job that reruns prunes each of
# its seeds again, and evaluate_pruned then rescores only the records the new weights change.
#
# Temporary checkpoints (real models by default): rule prune_and_evaluate prunes each checkpoint,
# scores the dimensions whose records are not current and removes it. A checkpoint that is not on
# disk has to be pruned again to be scored, so pruning and scoring share a job and its params: any
# edit to either reruns it, and inside it redoes only what the edit changed, seed by seed and dimension
# by dimension (its reports and records are update() outputs): when a report's key and every record
# of its checkpoint are current, nothing is pruned or loaded. To rescore without pruning, keep them.

if KEEP_CHECKPOINTS:

    rule prune:  # every seed of a set at a main-block setting
        input:
            unpack(pruning_inputs),
        output:
            reports=expand("results/prune_reports/{{model}}/{{method}}/{{target}}/{{calib}}/seed{seed}.json", seed=SEEDS),
            checkpoints=[directory(p) for p in expand("results/pruned/{{model}}/{{method}}/{{target}}/{{calib}}/seed{seed}", seed=SEEDS)],
        wildcard_constraints:
            **MAIN_BLOCK,
        params:
            code=lambda wc: library_code("prune.py", registry.modules(wc.method)),
            pruning_code=lambda wc: pruning_code(wc.method),
            options=method_options,
            dtype=lambda wc: config["models"][wc.model]["dtype"],
            model_manifest=lambda wc: required_manifest(wc.model),
            device=DEVICE,
            versions=PRUNING_STACK,
        resources:
            gpu=GPU,
            mem_mb=lambda wc, input: model_mem_mb(wc.model, input.size_mb),
        conda:
            "../envs/calmix.yaml"
        log:
            "logs/prune/{model}/{method}/{target}/{calib}.log",
        script:
            "../scripts/prune.py"

    use rule prune as prune_seed with:  # one checkpoint: a compare grid's, a data-free method's
        output:
            reports=["results/prune_reports/{model}/{method}/{target}/{calib}/seed{seed}.json"],
            checkpoints=[directory("results/pruned/{model}/{method}/{target}/{calib}/seed{seed}")],
        wildcard_constraints:
            **ANY_CHECKPOINT,
        log:
            "logs/prune/{model}/{method}/{target}/{calib}/seed{seed}.log",

    ruleorder: prune > prune_seed

else:

    rule prune_and_evaluate:  # every seed of a set at a main-block setting
        input:
            unpack(pruning_inputs),
            data=lambda wc: task_data(),
        output:
            reports=update(expand("results/prune_reports/{{model}}/{{method}}/{{target}}/{{calib}}/seed{seed}.json", seed=SEEDS)),
            scores=update(expand("results/eval/{{model}}/{{method}}/{{target}}/{{calib}}/seed{seed}/{dimension}.json", seed=SEEDS, dimension=DIMENSIONS)),
            per_item=update(expand("results/eval/{{model}}/{{method}}/{{target}}/{{calib}}/seed{seed}/{dimension}.items.parquet", seed=SEEDS, dimension=DIMENSIONS)),
        wildcard_constraints:
            **MAIN_BLOCK,
        params:
            seeds=SEEDS,
            checkpoints=lambda wc: expand("results/pruned/{m}/{method}/{target}/{calib}/seed{seed}", m=wc.model, method=wc.method, target=wc.target, calib=wc.calib, seed=SEEDS),
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
        wildcard_constraints:
            **ANY_CHECKPOINT,
        params:
            seeds=lambda wc: [int(wc.seed)],
            checkpoints=lambda wc: [f"results/pruned/{wc.model}/{wc.method}/{wc.target}/{wc.calib}/seed{wc.seed}"],
        log:
            "logs/prune_and_evaluate/{model}/{method}/{target}/{calib}/seed{seed}.log",

    ruleorder: prune_and_evaluate > prune_and_evaluate_seed
