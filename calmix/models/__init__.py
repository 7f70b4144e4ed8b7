"""Dense and pruned checkpoints as every model-reading rule loads them (tokenize, metrics,
generate_pool, prune, evaluate), and GGUF files made checkpoints (convert_gguf): the model loader,
pruning-target labels, the tokenizer, and a dense model's identity in the keys that decide reruns.
"""
