"""Dense and pruned checkpoints as every model-reading rule loads them (tokenize, metrics,
generate_pool, prune, evaluate): the model loader, pruning-target labels and the tokenizer.
"""
