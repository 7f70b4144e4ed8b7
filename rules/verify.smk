# On demand: `snakemake verify` checks every manifest under results/ against its file (calmix-verify).
# It has no output, so it runs whenever it is named and never otherwise; it reads only, and prints one
# line per damaged file with the --forcerun that rebuilds it. The job fails when anything is damaged.


localrules:
    verify,


rule verify:
    params:
        results="results",
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/verify.log",
    script:
        "../scripts/verify.py"
