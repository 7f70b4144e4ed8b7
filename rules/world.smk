# The built-in world: its pretraining corpus, held-out evaluation items and reference model.


rule world_corpus:
    output:
        corpus="results/world/pretrain.jsonl",
        manifest="results/world/pretrain.json",
    params:
        code=library_code("world_corpus.py"),
        seed=config["world"]["seed"],
        docs=config["world"]["train_docs"],
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/world_corpus.log",
    script:
        "../scripts/world_corpus.py"


rule world_eval_items:
    output:
        "results/world/eval/{task}.jsonl",
    params:
        code=library_code("world_eval_items.py"),
        seed=config["world"]["seed"],
        n=config["world"]["eval_items"],
    wildcard_constraints:
        task="world_[a-z_]+",
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/world_eval_items/{task}.log",
    script:
        "../scripts/world_eval_items.py"


rule train_world_model:
    input:
        "results/world/pretrain.jsonl",
    output:
        directory("results/models/{model}"),
    params:
        code=library_code("train_world_model.py"),
        vocab_size=config["world"]["vocab_size"],
        arch=config["world"]["model"],
        train=config["world"]["train"],
    wildcard_constraints:
        model="|".join(map(re.escape, WORLD_MODELS)) or "^$",
    threads: config["world"]["train"]["threads"]  # torch's threads are this, whatever --cores says: the weights depend on them
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/train_world_model/{model}.log",
    script:
        "../scripts/train_world_model.py"

