"""Evaluation (rules evaluate, fetch_task_data): lm-eval tasks as data, metric choice, per-item
scores, and the sandbox that code-executing tasks need.
"""
