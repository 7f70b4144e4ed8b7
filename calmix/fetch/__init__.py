"""Stage 0, fetching (rules fetch_model, fetch_task_data, prefetch): the only code that reaches
the Hugging Face hub; every other job reads what these rules wrote.
"""
