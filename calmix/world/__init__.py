"""The built-in world (rules world_corpus, world_eval_items, train_world_model and the corpus of
`kind: world` sources): a seeded synthetic domain, its documents, its evaluation items and its model.
"""
