"""Running a piece of a test in a child made by os.fork(), with a deadline."""

from __future__ import annotations

import json
import os
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
#: These tests fork a process that runs threads (a sender, a server) on purpose.
fork_with_threads = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)


def wait_child(pid: int, timeout: float) -> int:
    """The exit code of forked child ``pid``; kill it and fail if it outlives ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the forked child did not finish within {timeout}s: deadlocked?")
        time.sleep(0.01)


def run_in_fork(body: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Run ``body`` in a child made by os.fork() and return what it returned (as JSON).

    The child always ends with os._exit: no atexit hook, no pytest teardown runs there.
    A failure in the child is printed to its stderr and fails the test here.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_fd)
            with os.fdopen(write_fd, "w") as out:
                json.dump(body(), out)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as result:
        code = wait_child(pid, timeout)
        assert code == 0, "the forked child failed (its traceback is in the captured stderr)"
        return json.load(result)
