"""Pruning (rule prune): per-method kernels, masks, layer statistics, input capture, the sequential
driver and the method registry. `prune_model` is the public entry point.
"""
