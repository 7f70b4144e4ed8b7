"""Job logging: everything a stage prints (logging, tqdm bars, warnings) goes to its log file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup_logging(path: str | Path | None = None, threads: int | None = None) -> None:
    """Send logging, stdout and stderr to path (line-buffered, so `tail -f` shows progress)."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(path, "w", buffering=1, encoding="utf-8")
        sys.stdout = sys.stderr = stream
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
