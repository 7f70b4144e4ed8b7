"""Stage 0, fetching (rules fetch_model, fetch_gguf, fetch_task_data, task_items of registry packages,
prefetch): the only code that reaches the Hugging Face hub or downloads from the package registry;
every other job reads what these rules wrote.
"""
