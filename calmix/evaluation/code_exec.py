"""Scoring by execution: run a model-completed function against asserts, in a child process.

Used by the world_code_exec lm-eval task (``process_results: !function
calmix.evaluation.code_exec.process_results``). The program is the item's prompt (a function head), the
model's completion (its body) and the item's test asserts; it passes (pass@1 = 1) when the child
exits 0 within the time limit, and fails (0) on any error, a failed assert or a timeout.

Running model-written code is opt-in: every entry point here refuses unless the environment says
``HF_ALLOW_CODE_EVAL=1`` (the flag lm-eval's own code tasks read), which
:func:`calmix.evaluation.harness.evaluate` sets only with ``allow_code_execution=True`` (config
``evaluation.allow_code_execution: true``). The child is a fresh isolated interpreter (``python
-I -S``) in an empty temporary directory with an empty environment, address-space and CPU limits,
and sockets, subprocesses and file removal disabled before the program runs. That keeps honest
mistakes (an endless loop, a runaway allocation, a stray network call) contained; it is not a
sandbox against hostile code, which is why the opt-in exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

#: The environment flag that permits execution (shared with lm-eval's and `evaluate`'s code tasks).
ALLOW_ENV = "HF_ALLOW_CODE_EVAL"
#: Wall-clock seconds one program may run.
TIMEOUT_S = 3.0
#: Address-space limit of the child, bytes.
MEMORY_LIMIT = 512 * 2**20

# Runs in the child before the program: limits, then the dangerous doors closed.
_GUARD = """\
import builtins, os, resource, shutil, socket, subprocess, sys
resource.setrlimit(resource.RLIMIT_AS, ({mem}, {mem}))
resource.setrlimit(resource.RLIMIT_CPU, ({cpu}, {cpu}))
def _refused(*args, **kwargs):
    raise PermissionError("disabled while calmix runs model-written code")
for _mod, _names in ((socket, ("socket", "create_connection", "getaddrinfo", "socketpair", "fromfd")),
                     (subprocess, ("Popen", "run", "call", "check_call", "check_output", "getoutput")),
                     (os, ("system", "popen", "fork", "forkpty", "kill", "killpg", "execv", "execve", "execvp",
                           "spawnv", "spawnve", "remove", "unlink", "rmdir", "removedirs", "rename", "replace",
                           "truncate", "chmod", "chown", "putenv")),
                     (shutil, ("rmtree", "move", "chown"))):
    for _name in _names:
        if hasattr(_mod, _name):
            setattr(_mod, _name, _refused)
del _mod, _names, _name
"""


class CodeExecutionRefused(PermissionError):
    """Model-written code was about to run without the opt-in."""


@dataclass(frozen=True)
class Outcome:
    """How one program ended: 'passed', 'failed' (an error or a failed assert) or 'timeout'."""

    status: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def check_allowed() -> None:
    """Raise :class:`CodeExecutionRefused` unless ``HF_ALLOW_CODE_EVAL=1``."""
    if os.environ.get(ALLOW_ENV) != "1":
        raise CodeExecutionRefused(
            f"refusing to run model-written code: {ALLOW_ENV} is not '1'. calmix sets it only for studies "
            "with evaluation.allow_code_execution: true (evaluate(..., allow_code_execution=True)); "
            "turn that on only where running untrusted code is acceptable"
        )


def build_program(prompt: str, completion: str, tests: Sequence[str]) -> str:
    """The function as the model completed it, then the asserts at top level."""
    return prompt + completion + "\n\n" + "\n".join(tests) + "\n"


def run_program(program: str, timeout: float | None = None, memory_limit: int = MEMORY_LIMIT) -> Outcome:
    """Run ``program`` in a guarded child interpreter (at most ``timeout`` seconds, default
    :data:`TIMEOUT_S`); its whole process group is killed on timeout."""
    check_allowed()
    timeout = TIMEOUT_S if timeout is None else timeout
    guard = _GUARD.format(mem=int(memory_limit), cpu=max(1, int(timeout) + 1))
    with tempfile.TemporaryDirectory(prefix="calmix-exec-") as workdir:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env={},
            start_new_session=True,
            text=True,
        )
        try:
            _, stderr = proc.communicate(guard + program, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return Outcome("timeout", f"no exit within {timeout:g} s")
    if proc.returncode == 0:
        return Outcome("passed")
    lines = (stderr or "").strip().splitlines()
    return Outcome("failed", lines[-1] if lines else f"exit status {proc.returncode}")


def check_completion(prompt: str, completion: str, tests: Sequence[str], timeout: float | None = None) -> Outcome:
    """Whether the completed function passes every assert."""
    return run_program(build_program(prompt, completion, tests), timeout=timeout)


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """lm-eval hook of world_code_exec: pass@1 of the greedy completion (one sample per item)."""
    outcome = check_completion(doc["prompt"], results[0], doc["tests"])
    return {"pass@1": float(outcome.passed)}
