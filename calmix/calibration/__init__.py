"""Calibration data (rules corpus, tokenize, shard, mix, generate_pool, select_windows, metrics):
raw corpora -> token ids -> shards of exact windows; built sets (mixes, self-generated pools and the
selections from them); the OIT metrics of every shard.
"""
