"""Job logging: everything a stage prints (logging, tqdm bars, warnings) goes to its log file, and a
failure reads as one line that says what is wrong and what to do, before its traceback."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType


def error_line(error: BaseException) -> str:
    """One line for a person: calmix's own errors already say what, where and what to do; anything
    else (a bug, or a library's error) is named by its type so it can be searched."""
    message = " ".join(str(error).split()) or "(no message)"
    if type(error).__module__.split(".")[0] == "calmix":
        return message
    return f"{type(error).__name__}: {message}"


def _report_failure(log_path: Path, console) -> Callable:
    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        line = error_line(error)
        console.write(f"\ncalmix error: {line}\n(traceback in {log_path})\n\n")
        console.flush()
        sys.stderr.write(f"\ncalmix error: {line}\n\n--- traceback ---\n")
        traceback.print_exception(kind, error, tb, file=sys.stderr)
        sys.stderr.flush()

    return hook


def setup_logging(path: str | Path | None = None, threads: int | None = None) -> None:
    """Send logging, stdout and stderr to path (line-buffered, so `tail -f` shows progress).

    An uncaught error prints one line on the console (which Snakemake shows above its own error
    block) and the same line, then the traceback, in the log.
    """
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        console, stream = sys.stderr, open(path, "w", buffering=1, encoding="utf-8")
        sys.stdout = sys.stderr = stream
        sys.excepthook = _report_failure(Path(path), console)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
