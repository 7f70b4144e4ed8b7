"""Task data of lm-eval built-in tasks, fetched ahead of the evaluations (rule fetch_task_data): the
only evaluation code that reaches the hub."""

from __future__ import annotations

from typing import Any

from calmix.evaluation.tasks import TaskConfigError, lm_eval_version


def fetch_task_data(tasks: list[str]) -> dict:
    """Download the datasets of lm-eval's built-in ``tasks`` into the Hugging Face cache, so that
    evaluation jobs can run offline; returns what was fetched (task -> dataset, config, revision).

    Without network it checks the cache instead and raises :class:`calmix.fetch.hub.HubUnreachable`
    at once when a dataset is missing there.
    """
    from lm_eval.tasks import TaskManager

    from calmix.fetch import hub

    reason = hub.unreachable_reason()
    task_manager = TaskManager(include_defaults=True)
    unknown = [t for t in tasks if t not in task_manager.all_tasks]
    if unknown:
        raise TaskConfigError(f"lm-eval has no task {unknown[0]!r} (tasks asked for: {', '.join(tasks)})")
    fetched: dict[str, Any] = {}
    with hub.offline(reason is not None):
        for task in tasks:
            try:
                loaded = task_manager.load([task])["tasks"]
            except Exception as e:
                if reason is None:
                    raise
                raise hub.HubUnreachable(
                    f"the data of lm-eval task {task!r} is not in the local cache ({type(e).__name__}) and {reason}"
                ) from e
            for leaf, obj in loaded.items():
                cfg = obj.config
                fetched[leaf] = {
                    "dataset": cfg.dataset_path,
                    "config": cfg.dataset_name,
                    "revision": (cfg.dataset_kwargs or {}).get("revision"),
                }
    return {"tasks": tasks, "leaves": fetched, "lm_eval": lm_eval_version()}
