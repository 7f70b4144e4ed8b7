# Aggregation: retention with bootstrap intervals, correlations of metrics with retention, then the
# figures and the summary. Every output tagged report() lands in `snakemake --report results/report.html`.


rule retention:
    input:
        dense=dense_evals(),
        pruned=pruned_evals(),
        dense_items=per_items(dense_evals()),
        pruned_items=per_items(pruned_evals()),
        prune_reports=prune_reports(),
    output:
        per_checkpoint=report(
            "results/tables/retention.csv",
            caption="../report/retention_table.rst",
            category="Retention",
            labels={"table": "retention per checkpoint (item intervals)"},
        ),
        per_checkpoint_parquet="results/tables/retention.parquet",
        summary=report(
            "results/tables/retention_summary.csv",
            caption="../report/retention_summary.rst",
            category="Retention",
            labels={"table": "retention over seeds (seed and item intervals)"},
        ),
        summary_parquet="results/tables/retention_summary.parquet",
        settings=report(
            "results/tables/retention_settings.csv",
            caption="../report/retention_settings.rst",
            category="Retention",
            labels={"table": "retention per pruning setting (mean over sets)"},
        ),
        settings_parquet="results/tables/retention_settings.parquet",
        comparisons=(
            report(
                "results/tables/retention_comparisons.csv",
                caption="../report/retention_comparisons.rst",
                category="Mixes",
                labels={"table": "built sets against single sources"},
            )
            if BUILDERS
            else "results/tables/retention_comparisons.csv"
        ),
        comparisons_parquet="results/tables/retention_comparisons.parquet",
        source_pairs=report(
            "results/tables/retention_source_pairs.csv",
            caption="../report/retention_source_pairs.rst",
            category="Retention",
            labels={"table": "pairs of single sources (difference intervals)"},
        ),
        source_pairs_parquet="results/tables/retention_source_pairs.parquet",
        gold_prob=report(
            "results/tables/retention_gold_prob.csv",
            caption="../report/retention_gold_prob.rst",
            category="Retention",
            labels={"table": "gold-probability retention of multiple-choice tasks"},
        ),
        gold_prob_parquet="results/tables/retention_gold_prob.parquet",
    params:
        code=library_code("retention.py"),
        bootstrap=config["report"]["bootstrap"],
        sources=SOURCES,
        swept=SWEPT,
        builders=BUILDER_KINDS,
        baseline=BASELINE,
        controls=config["report"]["controls"],
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/retention.log",
    script:
        "../scripts/retention.py"


rule correlations:
    input:
        metrics="results/tables/metrics.parquet",
        retention="results/tables/retention.parquet",
    output:
        csv=report(
            "results/tables/correlations.csv",
            caption="../report/correlations.rst",
            category="Correlations",
            labels={"table": "Spearman rho, p, q and seed intervals"},
        ),
        parquet="results/tables/correlations.parquet",
    params:
        code=library_code("correlations.py"),
        single_sources=SOURCES,
        swept=SWEPT,
        bootstrap=config["report"]["bootstrap"],
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/correlations.log",
    script:
        "../scripts/correlations.py"


rule report:
    input:
        metrics="results/tables/metrics.parquet",
        retention="results/tables/retention.parquet",
        summary="results/tables/retention_summary.parquet",
        settings="results/tables/retention_settings.parquet",
        comparisons="results/tables/retention_comparisons.parquet",
        source_pairs="results/tables/retention_source_pairs.parquet",
        gold_prob="results/tables/retention_gold_prob.parquet",
        correlations="results/tables/correlations.parquet",
    output:
        md="results/report.md",
        heatmap=report(
            "results/plots/rho_heatmap.png",
            caption="../report/rho_heatmap.rst",
            category="Correlations",
            labels={"figure": "rho heatmap"},
        ),
        scatter=report(
            directory("results/plots/scatter"),
            patterns=["{setting}.png"],
            caption="../report/scatter.rst",
            category="Correlations",
            labels={"figure": "metric vs retention", "setting": "{setting}"},
        ),
        retention_plot=report(
            "results/plots/retention.png",
            caption="../report/retention_plot.rst",
            category="Retention",
            labels={"figure": "retention per source and dimension"},
        ),
        profile=report(
            "results/plots/profile.png",
            caption="../report/profile.rst",
            category="Retention",
            labels={"figure": "capability profile"},
        ),
        methods=report(
            "results/plots/methods.png",
            caption="../report/methods.rst",
            category="Retention",
            labels={"figure": "methods side by side"},
        ),
        **(
            {
                "builders": report(
                    "results/plots/builders.png",
                    caption="../report/builders.rst",
                    category="Mixes",
                    labels={"figure": "built sets against single sources"},
                )
            }
            if BUILDERS
            else {}
        ),
    params:
        code=library_code("report.py"),
        title=config["report"]["title"],
        sources=SOURCES,
        swept=SWEPT,
        builders=BUILDER_KINDS,
        baseline=BASELINE,
        controls=config["report"]["controls"],
    conda:
        "../envs/calmix.yaml"
    log:
        "logs/report.log",
    script:
        "../scripts/report.py"
