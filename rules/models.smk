# Dense models calmix makes from a file: a GGUF file (local, fetched from a registry package or the hub)
# dequantized once into a verified safetensors checkpoint. (The world's model is trained in world.smk.)


rule convert_gguf:
    input:
        unpack(gguf_inputs),
    output:
        directory("results/models/{model}"),
    params:
        code=library_code("convert_gguf.py"),
        spec=lambda wc: config["models"][wc.model],
    wildcard_constraints:
        model=one_of(GGUF_MODELS),
    threads: workflow.cores
    resources:
        mem_mb=lambda wc, input: max(2000, int(10 * input.size_mb)),
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/convert_gguf/{model}.log",
    script:
        "../scripts/convert_gguf.py"
