"""Evaluation (rules task_items, evaluate_dense, evaluate_pruned, prune_and_evaluate, fetch_task_data): lm-eval tasks as
data, their items built offline, metric choice, per-item scores, the sandbox that code-executing tasks
need, and a pruned checkpoint's job from dense model to records (``pruned``).
"""
