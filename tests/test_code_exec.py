"""calmix.evaluation.code_exec: model-completed functions are run against asserts, only with the opt-in."""

from __future__ import annotations

import time

import pytest

from calmix.evaluation import code_exec
from calmix.evaluation.code_exec import CodeExecutionRefused, check_completion, process_results, run_program
from calmix.world.domain import World

HEAD = "def add_7(x):\n    return"
TESTS = ["assert add_7(3) == 10", "assert add_7(-2) == 5"]


@pytest.fixture
def allowed(monkeypatch):
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")


@pytest.mark.parametrize("value", [None, "0", "true"])
def test_refuses_without_the_flag(monkeypatch, tmp_path, value):
    if value is None:
        monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    else:
        monkeypatch.setenv("HF_ALLOW_CODE_EVAL", value)
    marker = tmp_path / "ran"
    with pytest.raises(CodeExecutionRefused, match="HF_ALLOW_CODE_EVAL.*allow_code_execution"):
        run_program(f"open({str(marker)!r}, 'w').close()")
    with pytest.raises(CodeExecutionRefused):
        process_results({"prompt": HEAD, "tests": TESTS}, [" x + 7"])
    assert not marker.exists()


@pytest.mark.parametrize(
    "completion, status",
    [
        (" x + 7", "passed"),
        (" 7 + x", "passed"),  # what exact match would not credit
        (" (x + 3) + 4", "passed"),
        (" x - 7", "failed"),  # an assert fails
        (" x +", "failed"),  # syntax error
        (" add_7(x)", "failed"),  # endless recursion ends in an error
        (" undefined_name", "failed"),
    ],
)
def test_completion_is_judged_by_running_it(allowed, completion, status):
    outcome = check_completion(HEAD, completion, TESTS)
    assert outcome.status == status, outcome
    assert process_results({"prompt": HEAD, "tests": TESTS}, [completion]) == {"pass@1": float(status == "passed")}


def test_endless_loop_times_out_and_scores_zero(allowed, monkeypatch):
    monkeypatch.setattr(code_exec, "TIMEOUT_S", 0.5)
    looping = " next(filter(None, iter(int, 1)))"  # iterates zeros forever, without allocating
    start = time.perf_counter()
    assert check_completion(HEAD, looping, TESTS).status == "timeout"
    assert process_results({"prompt": HEAD, "tests": TESTS}, [looping]) == {"pass@1": 0.0}
    assert time.perf_counter() - start < 5


def test_network_and_processes_are_closed(allowed, tmp_path):
    assert "PermissionError" in run_program("import socket\nsocket.create_connection(('127.0.0.1', 9))").detail
    assert "PermissionError" in run_program("import subprocess\nsubprocess.run(['true'])").detail
    assert "PermissionError" in run_program("import os\nos.system('true')").detail
    victim = tmp_path / "keep.txt"
    victim.write_text("x")
    assert not run_program(f"import os\nos.remove({str(victim)!r})").passed
    assert victim.exists()
    assert run_program("x = bytearray(2 ** 33)").detail == "MemoryError"


def test_world_items_pass_with_their_answer_and_fail_without(allowed):
    items = World(0).eval_items("world_code_exec", 12, seed=0)
    assert items == World(0).eval_items("world_code_exec", 12, seed=0)
    for item in items:
        assert item["prompt"].startswith(f"def {item['entry_point']}(") and item["prompt"].endswith("    return")
        assert len(item["tests"]) == 3
        assert check_completion(item["prompt"], " " + item["answer"], item["tests"]).passed, item
        assert not check_completion(item["prompt"], " 0", item["tests"]).passed, item


def _alive(pid: int) -> bool:
    """Whether pid is a live process (a zombie, killed and waiting to be reaped, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# Gets round the guard as code that means it would (posix re-imported), forks a grandchild that leaves
# the session and sleeps, and itself either exits at once or sleeps too.
ESCAPE = """
import sys, time
del sys.modules["posix"]
import posix
pid = posix.fork()
if pid == 0:
    posix.setsid()
    if posix.fork() == 0:
        open({pidfile!r}, "w").write(str(posix.getpid()))
        time.sleep(60)
    posix._exit(0)
{parent}
"""


@pytest.mark.parametrize("parent", ["time.sleep(60)", "time.sleep(0.5)"])
def test_a_forked_session_leaving_grandchild_dies_with_the_program(allowed, tmp_path, parent):
    pidfile = tmp_path / "grandchild.pid"
    start = time.perf_counter()
    outcome = run_program(ESCAPE.format(pidfile=str(pidfile), parent=parent), timeout=2.0)
    elapsed = time.perf_counter() - start
    assert outcome.status == ("timeout" if parent == "time.sleep(60)" else "passed"), outcome
    assert elapsed < 2.0 + 3.0, elapsed  # the timeout holds whatever the program forks
    assert pidfile.is_file(), "the program should have forked (the test needs a grandchild to chase)"
    assert not _alive(int(pidfile.read_text()))


def test_the_program_runs_in_a_fresh_folder_with_an_empty_environment_and_limits(allowed, monkeypatch):
    monkeypatch.setenv("CALMIX_SECRET", "x")
    probe = ("import os\n"
             "assert 'CALMIX_SECRET' not in os.environ, os.environ\n"
             "assert sorted(os.listdir('.')) == ['program.py', 'stderr.txt'], os.listdir('.')\n"
             "fds = os.listdir('/proc/self/fd')\n"
             "assert len(fds) <= 4, fds\n")  # 0, 1, 2 and the listing's own
    assert run_program(probe).passed, run_program(probe)
    assert run_program("open('big', 'wb').write(b'0' * (64 * 2 ** 20))").status == "failed"  # RLIMIT_FSIZE
    assert "PermissionError" in run_program("import os\nos.execv('/bin/sh', ['sh'])").detail
    assert run_program("import _socket").detail.startswith("ModuleNotFoundError: import of _socket halted")
