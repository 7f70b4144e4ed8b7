"""Evaluation (rules task_items, evaluate_dense, evaluate_pruned, fetch_task_data): lm-eval tasks as
data, their items built offline, metric choice, per-item scores, and the sandbox that
code-executing tasks need.
"""
