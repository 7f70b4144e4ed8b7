"""Analysis (rules retention, correlations, report): retention with bootstrap intervals, builder
comparisons, metric-retention correlations, plots and the report.
"""
