# Aggregation: retention, Spearman correlations of metrics with retention, plots and the summary.


rule report:
    input:
        metrics="results/tables/metrics.parquet",
        dense=dense_evals(),
        pruned=pruned_evals(),
    output:
        md="results/report.md",
        heatmap="results/plots/rho_heatmap.png",
        retention_plot="results/plots/retention.png",
        retention="results/tables/retention.csv",
        retention_parquet="results/tables/retention.parquet",
        correlations="results/tables/correlations.csv",
        correlations_parquet="results/tables/correlations.parquet",
    params:
        single_sources=SOURCES,
        title=config["report"]["title"],
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/report.log",
    script:
        "../scripts/report.py"
