"""Analysis (rules retention, correlations, report): what the pruned models kept, and why.

From the eval records to results/tables/ and results/report.md: retention point estimates
(retention), their bootstrap intervals per checkpoint and over seeds (intervals), the mean over
calibration sets and built sets against single sources (comparisons), metric-retention correlations
(correlation), the figures (plots) and the summary (report). Every number is defined once in
docs/definitions.md.
"""
