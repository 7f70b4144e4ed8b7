"""Pruning (rules prune and prune_and_evaluate): per-method kernels (sparsegpt, wanda, magnitude), their shared masks, layer
statistics and input capture, sparsity profiles (owl), the sequential driver and the registry that
names them all. The public entry point is ``calmix.pruning.driver.prune_model``; a checkpoint of the
workflow is made by ``calmix.pruning.checkpoints.prune_checkpoint``.

This file imports nothing: the workflow reads ``calmix.pruning.registry`` while it parses, without torch.
"""
