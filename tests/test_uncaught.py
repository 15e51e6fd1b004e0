"""Uncaught exceptions reach error tracking: a script that dies of one, a thread that
ends with one, an asyncio task or callback whose exception no one retrieved.

Scripts run as real subprocesses against the local server; threads, event loops and
forks are real too. In-process tests start with recording stand-ins as the hooks that
were there before (so nothing is printed and pytest's own thread hook is not involved),
and check afterwards that every hook is back as it was.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import logging.config
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import posthog_logging
from posthog_logging import Client, default_client, uncaught
from posthog_logging.server import LocalServer

from .conftest import API_KEY
from .forking import fork_with_threads, needs_fork, run_in_fork
from .helpers import Event, only

#: Seconds to wait for a flush, or for the server to store what a process sent.
WAIT = 5.0

# -- the hooks that were there before ----------------------------------------------------


class Previous:
    """Stand-ins for the hooks an application had before autocapture: each records what
    it is given and prints nothing."""

    def __init__(self) -> None:
        self.process: list[BaseException] = []
        self.threads: list[tuple[BaseException | None, str | None]] = []
        # Bound once, so that ``sys.excepthook is previous.excepthook`` can be checked.
        self.excepthook = self._on_process
        self.threading_excepthook = self._on_thread

    def _on_process(
        self, exc_type: type[BaseException], exc: BaseException, tb: types.TracebackType | None
    ) -> None:
        self.process.append(exc)

    def _on_thread(self, args: Any) -> None:
        self.threads.append((args.exc_value, args.thread.name if args.thread else None))


@pytest.fixture(autouse=True)
def previous(monkeypatch: pytest.MonkeyPatch) -> Iterator[Previous]:
    """Recording hooks in place of ``sys.excepthook`` and ``threading.excepthook``; after
    the test (its clients shut down), each hook, and asyncio's loop method, must be the
    one the test started with."""
    hooks = Previous()
    loop_method = asyncio.BaseEventLoop.call_exception_handler
    monkeypatch.setattr(sys, "excepthook", hooks.excepthook)
    monkeypatch.setattr(threading, "excepthook", hooks.threading_excepthook)
    # Put back at the end whatever happens.
    monkeypatch.setattr(asyncio.BaseEventLoop, "call_exception_handler", loop_method)
    yield hooks
    assert sys.excepthook is hooks.excepthook, "sys.excepthook was not restored"
    assert threading.excepthook is hooks.threading_excepthook, "threading.excepthook was not"
    assert asyncio.BaseEventLoop.call_exception_handler is loop_method, "asyncio was not"
    assert not uncaught.installed()


def crash(exc: BaseException) -> tuple[type[BaseException], BaseException, Any]:
    """``exc`` raised and caught, as ``sys.excepthook`` is given it."""
    try:
        raise exc
    except BaseException as caught:
        return type(caught), caught, caught.__traceback__


def exceptions(server: LocalServer) -> list[Event]:
    """The ``$exception`` events the server stored, oldest first."""
    return server.events(event="$exception")


def first(event: Event) -> dict[str, Any]:
    """The outermost exception of an ``$exception`` event."""
    return event["properties"]["$exception_list"][0]


def functions(event: Event) -> list[str]:
    """The functions of the outermost exception's frames, outermost call first."""
    return [frame["function"] for frame in first(event)["stacktrace"]["frames"]]


def settle(client: Client) -> None:
    """Everything ``client`` queued has reached the server (flush answers once the server
    has answered every request)."""
    assert client.flush(WAIT), f"flush() did not finish within {WAIT:g}s"


# -- scripts that die ---------------------------------------------------------------------


def run_script(
    tmp_path: Path, source: str, host: str, timeout: float = 30.0
) -> tuple[subprocess.CompletedProcess[str], float, Path]:
    """Run ``source`` as a script file with the server's address in the environment;
    its result, how long it ran, and its path."""
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(source))
    env = dict(os.environ, POSTHOG_HOST=host, POSTHOG_API_KEY=API_KEY)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )
    return done, time.monotonic() - started, script


#: How each way of switching autocapture on is written in a script.
SWITCH_ON = {
    "configure": """
        posthog_logging.configure(
            api_key=os.environ["POSTHOG_API_KEY"],
            host=os.environ["POSTHOG_HOST"],
            enable_exception_autocapture=True,
        )
    """,
    # Switched on first, then the address: nothing else is called before the crash.
    "module_attribute": """
        posthog_logging.enable_exception_autocapture = True
        posthog_logging.api_key = os.environ["POSTHOG_API_KEY"]
        posthog_logging.host = os.environ["POSTHOG_HOST"]
    """,
    "dictconfig": """
        import logging.config

        logging.config.dictConfig({
            "version": 1,
            "handlers": {
                "posthog": {
                    "class": "posthog_logging.PostHogHandler",
                    "api_key": os.environ["POSTHOG_API_KEY"],
                    "host": os.environ["POSTHOG_HOST"],
                    "enable_exception_autocapture": True,
                },
            },
            "root": {"handlers": ["posthog"], "level": "INFO"},
        })
    """,
}

DIES = """
    def charge(order_id):
        raise ValueError(f"card declined for order {order_id}")


    def checkout():
        charge(1234)


    checkout()
"""


@pytest.mark.parametrize("switch", sorted(SWITCH_ON))
def test_a_script_that_dies_reports_its_crash(
    switch: str, server: LocalServer, tmp_path: Path
) -> None:
    """A script with autocapture on (by configure(), by the module attribute alone, or
    by a PostHogHandler's options in dictConfig) that dies of an exception: PostHog gets
    one fatal, unhandled ``$exception`` with the script's frames, and the user still sees
    Python's traceback and exit status 1."""
    parts = ["import os\n\nimport posthog_logging\n", SWITCH_ON[switch], DIES]
    source = "\n".join(textwrap.dedent(part) for part in parts)
    done, _, script = run_script(tmp_path, source, server.url)

    assert done.returncode == 1, done.stderr
    assert "Traceback (most recent call last):" in done.stderr
    assert "ValueError: card declined for order 1234" in done.stderr
    event = only(server.wait_for_events(1, timeout=WAIT, event="$exception"))
    props = event["properties"]
    assert props["$exception_level"] == "fatal"
    assert props["$exception_source"] == "python.sys_excepthook"
    [exc] = props["$exception_list"]
    assert exc["type"] == "ValueError"
    assert exc["value"] == "card declined for order 1234"
    assert exc["mechanism"]["handled"] is False
    assert exc["mechanism"]["type"] == "onuncaughtexception"
    frames = exc["stacktrace"]["frames"]
    assert [frame["function"] for frame in frames] == ["<module>", "checkout", "charge"]
    assert {frame["abs_path"] for frame in frames} == {str(script)}
    assert all(frame["in_app"] for frame in frames)
    # The process exited after sending: nothing else was sent for the crash.
    assert len(exceptions(server)) == 1


def unreachable_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("outage", ["refused", "never_answers"])
def test_a_crash_during_an_outage_exits_within_shutdown_timeout(
    outage: str, tmp_path: Path
) -> None:
    """A script that dies while PostHog cannot be reached (the connection refused, or
    accepted and never answered) with ``shutdown_timeout=1``: it still prints its
    traceback and exits with status 1, within about that second, rather than waiting on
    retries or a request timeout."""
    with socket.socket() as silent:
        if outage == "never_answers":
            silent.bind(("127.0.0.1", 0))
            silent.listen(16)  # connections queue up; none is ever read or answered
            port = int(silent.getsockname()[1])
        else:
            port = unreachable_port()
        source = """
            import os

            import posthog_logging

            posthog_logging.configure(
                api_key=os.environ["POSTHOG_API_KEY"],
                host=os.environ["POSTHOG_HOST"],
                enable_exception_autocapture=True,
                shutdown_timeout=1,
            )
            raise RuntimeError("database is gone")
        """
        done, elapsed, _ = run_script(tmp_path, source, f"http://127.0.0.1:{port}")

    assert done.returncode == 1, done.stderr
    assert "RuntimeError: database is gone" in done.stderr
    assert elapsed < 1 + 5, f"the script took {elapsed:.1f}s to exit"


@pytest.mark.parametrize(
    ("ending", "returncode"),
    [("raise KeyboardInterrupt", -2), ("raise SystemExit(3)", 3)],
    ids=["keyboard_interrupt", "system_exit"],
)
def test_a_script_stopped_by_interrupt_or_exit_sends_no_exception(
    ending: str, returncode: int, server: LocalServer, tmp_path: Path
) -> None:
    """Ctrl-C and ``sys.exit()`` are how programs stop, not errors: a script with
    autocapture on that ends that way sends no ``$exception``, while what it captured
    before still arrives."""
    source = f"""
        import os

        import posthog_logging

        posthog_logging.configure(
            api_key=os.environ["POSTHOG_API_KEY"],
            host=os.environ["POSTHOG_HOST"],
            enable_exception_autocapture=True,
        )
        posthog_logging.capture("sentinel")
        {ending}
    """
    done, _, _ = run_script(tmp_path, source, server.url)

    assert done.returncode == returncode, done.stderr
    server.wait_for_events(1, timeout=WAIT, event="sentinel")
    assert exceptions(server) == []


def test_an_interactive_session_sends_no_exception(server: LocalServer) -> None:
    """Typos in an interactive session (``python -i``) are shown as usual and never sent,
    even with autocapture on; an event captured in the session still arrives."""
    lines = textwrap.dedent(
        """
        import os, posthog_logging
        posthog_logging.configure(api_key=os.environ["POSTHOG_API_KEY"], host=os.environ["POSTHOG_HOST"], enable_exception_autocapture=True)
        1 / 0
        posthog_logging.capture("sentinel")
        """  # noqa: E501
    )
    env = dict(os.environ, POSTHOG_HOST=server.url, POSTHOG_API_KEY=API_KEY)
    done = subprocess.run(
        [sys.executable, "-i", "-q"],
        input=lines,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert "ZeroDivisionError: division by zero" in done.stderr
    server.wait_for_events(1, timeout=WAIT, event="sentinel")
    assert exceptions(server) == []


@needs_fork
def test_a_forked_child_that_dies_reports_its_own_crash(
    server: LocalServer, tmp_path: Path
) -> None:
    """A script that turns autocapture on, then forks a worker that dies of an exception:
    the worker's crash arrives from the worker, and the parent, which ends normally,
    sends none."""
    source = """
        import os

        import posthog_logging

        posthog_logging.configure(
            api_key=os.environ["POSTHOG_API_KEY"],
            host=os.environ["POSTHOG_HOST"],
            enable_exception_autocapture=True,
        )
        posthog_logging.capture("parent_started")
        posthog_logging.flush()

        pid = os.fork()
        if pid == 0:
            def work():
                raise LookupError(f"worker {os.getpid()} found nothing")

            work()
        _, status = os.waitpid(pid, 0)
        print(pid, os.waitstatus_to_exitcode(status))
    """
    done, _, _ = run_script(tmp_path, source, server.url)

    assert done.returncode == 0, done.stderr
    child, child_code = map(int, done.stdout.split())
    assert child_code == 1
    event = only(server.wait_for_events(1, timeout=WAIT, event="$exception"))
    assert first(event)["value"] == f"worker {child} found nothing"
    assert event["properties"]["$exception_source"] == "python.sys_excepthook"
    assert "work" in functions(event)


# -- the process hook, in-process ---------------------------------------------------------


def test_the_process_hook_sends_then_calls_the_previous_one(
    make_client: Callable[..., Client], server: LocalServer, previous: Previous
) -> None:
    """With autocapture on, ``sys.excepthook`` sends the exception and then hands it to the
    hook that was installed before; once the client is shut down, that hook is
    ``sys.excepthook`` again and nothing more is sent."""
    client = make_client(enable_exception_autocapture=True)
    assert sys.excepthook is not previous.excepthook
    exc_type, exc, tb = crash(ValueError("first"))
    sys.excepthook(exc_type, exc, tb)

    assert previous.process == [exc]
    settle(client)
    event = only(exceptions(server))
    assert first(event)["value"] == "first"
    assert event["properties"]["$exception_source"] == "python.sys_excepthook"

    client.shutdown(timeout=WAIT)
    assert sys.excepthook is previous.excepthook
    sys.excepthook(*crash(ValueError("after shutdown")))
    assert len(previous.process) == 2
    assert client.stats.dropped.get("shutdown", 0) == 0  # not even offered to the client
    assert len(exceptions(server)) == 1


def test_interrupts_and_exits_given_to_the_hook_are_not_sent(
    make_client: Callable[..., Client], server: LocalServer, previous: Previous
) -> None:
    """``KeyboardInterrupt`` and ``SystemExit`` passed to ``sys.excepthook`` go on to the
    previous hook and are not sent; an error after them is."""
    client = make_client(enable_exception_autocapture=True)
    stop, leave, error = KeyboardInterrupt(), SystemExit(2), KeyError("missing")
    for exc in (stop, leave, error):
        sys.excepthook(*crash(exc))

    assert previous.process == [stop, leave, error]
    settle(client)
    assert [first(event)["type"] for event in exceptions(server)] == ["KeyError"]


def test_an_interactive_session_in_process_sends_nothing(
    make_client: Callable[..., Client],
    server: LocalServer,
    previous: Previous,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While ``sys.ps1`` is set (an interactive session), the hook only shows the error
    (the previous hook runs) and sends nothing."""
    client = make_client(enable_exception_autocapture=True)
    monkeypatch.setattr(sys, "ps1", ">>> ", raising=False)
    exc_type, exc, tb = crash(NameError("name 'pritn' is not defined"))
    sys.excepthook(exc_type, exc, tb)
    client.capture("sentinel")

    assert previous.process == [exc]
    settle(client)
    assert [event["event"] for event in server.events()] == ["sentinel"]


def test_two_clients_with_autocapture_send_each_crash_once_to_the_newest(
    make_client: Callable[..., Client], server: LocalServer, previous: Previous
) -> None:
    """Two clients ask for autocapture: each crash is sent once, by the newest client still
    running; when it shuts down, the older one takes over; when both have, the previous
    hook is back in place."""
    older = make_client(enable_exception_autocapture=True, super_properties={"client": "older"})
    newer = make_client(enable_exception_autocapture=True, super_properties={"client": "newer"})

    sys.excepthook(*crash(ValueError("one")))
    assert len(previous.process) == 1  # the hook chain runs the previous hook once
    settle(newer)
    settle(older)
    event = only(exceptions(server))
    assert event["properties"]["client"] == "newer"

    newer.shutdown(timeout=WAIT)
    assert sys.excepthook is not previous.excepthook  # the older client still asks
    sys.excepthook(*crash(ValueError("two")))
    settle(older)
    sent = {first(e)["value"]: e["properties"]["client"] for e in exceptions(server)}
    assert sent == {"one": "newer", "two": "older"}

    older.shutdown(timeout=WAIT)
    assert sys.excepthook is previous.excepthook
    assert len(previous.process) == 2


def test_configuring_twice_sends_each_crash_once_to_the_new_default_client(
    server: LocalServer, previous: Previous
) -> None:
    """``configure(enable_exception_autocapture=True)`` called twice (say on a reload):
    a crash is sent once, by the client configured last; shutting it down puts the
    previous hook back."""
    options = {"api_key": API_KEY, "host": server.url, "flush_interval": 0.05}
    posthog_logging.configure(enable_exception_autocapture=True, **options)
    posthog_logging.configure(
        enable_exception_autocapture=True, super_properties={"generation": 2}, **options
    )
    exc_type, exc, tb = crash(OSError("disk full"))
    sys.excepthook(exc_type, exc, tb)

    assert previous.process == [exc]
    assert posthog_logging.flush(WAIT)
    event = only(exceptions(server))
    assert event["properties"]["generation"] == 2
    assert first(event)["value"] == "disk full"
    posthog_logging.shutdown(WAIT)
    assert sys.excepthook is previous.excepthook
    default_client.reset()


def test_the_module_attribute_switches_autocapture_on_at_once(
    server: LocalServer, previous: Previous
) -> None:
    """``posthog_logging.enable_exception_autocapture = True`` takes effect when it is set:
    the default client is built when the crash arrives, and sends it."""
    posthog_logging.api_key = API_KEY
    posthog_logging.host = server.url
    posthog_logging.enable_exception_autocapture = True
    assert default_client.existing() is None
    exc_type, exc, tb = crash(ValueError("sent"))
    sys.excepthook(exc_type, exc, tb)

    assert previous.process == [exc]
    assert posthog_logging.flush(WAIT)
    event = only(exceptions(server))
    assert first(event)["value"] == "sent"
    assert event["properties"]["$exception_source"] == "python.sys_excepthook"
    default_client.reset()
    posthog_logging.enable_exception_autocapture = False


def test_setting_the_module_attribute_to_false_stops_sending(
    server: LocalServer, previous: Previous
) -> None:
    """Setting ``posthog_logging.enable_exception_autocapture`` back to False stops the
    sending at once and puts the previous hook back, even after a crash was sent."""
    posthog_logging.api_key = API_KEY
    posthog_logging.host = server.url
    posthog_logging.enable_exception_autocapture = True
    try:
        sys.excepthook(*crash(ValueError("sent")))
        posthog_logging.enable_exception_autocapture = False
        sys.excepthook(*crash(ValueError("not sent")))
        assert posthog_logging.flush(WAIT)  # the default client built for the first crash

        assert len(previous.process) == 2
        assert [first(e)["value"] for e in exceptions(server)] == ["sent"]
        assert sys.excepthook is previous.excepthook
    finally:
        default_client.reset()


def test_a_hook_installed_over_ours_keeps_working_after_shutdown(
    make_client: Callable[..., Client], server: LocalServer, previous: Previous
) -> None:
    """Another library wraps ``sys.excepthook`` after autocapture was switched on; when
    the client shuts down, that library's hook stays installed and still reaches the
    original hook through ours, which sends nothing any more."""
    client = make_client(enable_exception_autocapture=True)
    ours = sys.excepthook
    seen: list[BaseException] = []

    def theirs(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        seen.append(exc)
        ours(exc_type, exc, tb)

    sys.excepthook = theirs
    try:
        before = crash(ValueError("before shutdown"))
        sys.excepthook(*before)
        settle(client)
        client.shutdown(timeout=WAIT)

        assert sys.excepthook is theirs
        after = crash(ValueError("after shutdown"))
        sys.excepthook(*after)
        assert seen == [before[1], after[1]]
        assert previous.process == [before[1], after[1]]
        assert client.stats.dropped.get("shutdown", 0) == 0  # not even offered to it
        assert [first(e)["value"] for e in exceptions(server)] == ["before shutdown"]
    finally:
        sys.excepthook = previous.excepthook


def test_switching_on_again_under_a_foreign_hook_sends_each_crash_once(
    make_client: Callable[..., Client], server: LocalServer, previous: Previous
) -> None:
    """Autocapture switched off while another library's hook wraps ours, then on again
    with a new client: a crash is sent once (not once per hook of ours in the chain), and
    every hook in the chain, the original included, still runs once."""
    make_client(enable_exception_autocapture=True).shutdown(timeout=WAIT)
    first_client = make_client(enable_exception_autocapture=True)
    ours = sys.excepthook
    seen: list[BaseException] = []

    def theirs(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        seen.append(exc)
        ours(exc_type, exc, tb)

    sys.excepthook = theirs
    try:
        first_client.shutdown(timeout=WAIT)
        second = make_client(enable_exception_autocapture=True)
        exc_type, exc, tb = crash(ValueError("once"))
        sys.excepthook(exc_type, exc, tb)
        settle(second)

        assert seen == [exc]
        assert previous.process == [exc]
        assert [first(e)["value"] for e in exceptions(server)] == ["once"]
        second.shutdown(timeout=WAIT)
        assert sys.excepthook is theirs
    finally:
        sys.excepthook = previous.excepthook


@needs_fork
@fork_with_threads
def test_a_forked_child_sends_its_crash_with_the_inherited_hook(
    make_client: Callable[..., Client], server: LocalServer, previous: Previous
) -> None:
    """The parent switched autocapture on, then forked: an exception uncaught in the
    child reaches the server from the child, through the hook it inherited."""
    client = make_client(enable_exception_autocapture=True)

    def child() -> int:
        sys.excepthook(*crash(ValueError(f"in child {os.getpid()}")))
        assert client.flush(WAIT)
        return os.getpid()

    pid = run_in_fork(child)

    event = only(server.wait_for_events(1, timeout=WAIT, event="$exception"))
    assert first(event)["value"] == f"in child {pid}"
    assert event["properties"]["$exception_source"] == "python.sys_excepthook"
    assert previous.process == []  # the parent's hook never ran


# -- threads ------------------------------------------------------------------------------


def test_a_thread_that_dies_reports_its_exception(
    make_client: Callable[..., Client], server: LocalServer, previous: Previous
) -> None:
    """A worker thread ends with an exception: PostHog gets one unhandled ``$exception`` at
    level error naming the thread, and the previous ``threading.excepthook`` still runs
    (so the usual "Exception in thread" report is not lost)."""
    client = make_client(enable_exception_autocapture=True)

    def poll_queue() -> None:
        raise ConnectionError("broker went away")

    worker = threading.Thread(target=poll_queue, name="queue-poller")
    worker.start()
    worker.join(WAIT)

    [(exc, name)] = previous.threads
    assert (type(exc), str(exc), name) == (ConnectionError, "broker went away", "queue-poller")
    settle(client)
    event = only(exceptions(server))
    props = event["properties"]
    assert props["$exception_source"] == "python.threading_excepthook"
    assert props["$exception_level"] == "error"
    assert props["thread_name"] == "queue-poller"
    assert first(event)["mechanism"]["handled"] is False
    assert first(event)["mechanism"]["type"] == "onuncaughtexception"
    assert first(event)["type"] == "ConnectionError"
    assert "poll_queue" in functions(event)
    client.shutdown(timeout=WAIT)
    assert threading.excepthook is previous.threading_excepthook


def test_a_thread_ended_by_system_exit_sends_nothing(
    make_client: Callable[..., Client], server: LocalServer
) -> None:
    """A thread that ends with ``sys.exit()`` ends quietly: nothing is sent."""
    client = make_client(enable_exception_autocapture=True)
    worker = threading.Thread(target=sys.exit, args=(0,))
    worker.start()
    worker.join(WAIT)
    client.capture("sentinel")

    settle(client)
    assert [event["event"] for event in server.events()] == ["sentinel"]


# -- asyncio ------------------------------------------------------------------------------


async def fail_payment() -> None:
    raise ValueError("payment provider said no")


def abandon_failed_task(loop: asyncio.AbstractEventLoop) -> None:
    """Run a task that fails and that no one awaits, close the loop, let the task go."""
    task = loop.create_task(fail_payment(), name="charge-card")
    while not task.done():
        loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    del task
    gc.collect()


def test_a_task_exception_never_retrieved_is_sent(
    make_client: Callable[..., Client], server: LocalServer
) -> None:
    """A task fails and no one awaits it; when it is collected, asyncio reports "Task
    exception was never retrieved", and PostHog gets that exception as an unhandled
    ``$exception`` with the task's name and asyncio's message."""
    client = make_client(enable_exception_autocapture=True)
    abandon_failed_task(asyncio.new_event_loop())

    settle(client)
    event = only(exceptions(server))
    props = event["properties"]
    assert props["$exception_source"] == "python.asyncio_exception_handler"
    assert props["$exception_level"] == "error"
    assert props["asyncio_message"] == "Task exception was never retrieved"
    assert props["asyncio_task"] == "charge-card"
    mechanism = first(event)["mechanism"]
    assert (mechanism["type"], mechanism["handled"]) == ("task", False)
    assert first(event)["value"] == "payment provider said no"
    assert "fail_payment" in functions(event)


def test_an_exception_in_a_loop_callback_is_sent(
    make_client: Callable[..., Client], server: LocalServer
) -> None:
    """A ``call_soon`` callback raises: the loop carries on, and PostHog gets the exception
    as an unhandled ``$exception`` (mechanism ``onuncaughtexception``)."""
    client = make_client(enable_exception_autocapture=True)

    def refresh_cache() -> None:
        raise TimeoutError("cache refresh timed out")

    loop = asyncio.new_event_loop()
    try:
        loop.call_soon(refresh_cache)
        loop.run_until_complete(asyncio.sleep(0.01))
    finally:
        loop.close()

    settle(client)
    event = only(exceptions(server))
    assert event["properties"]["$exception_source"] == "python.asyncio_exception_handler"
    assert event["properties"]["asyncio_message"].startswith("Exception in callback")
    mechanism = first(event)["mechanism"]
    assert (mechanism["type"], mechanism["handled"]) == ("onuncaughtexception", False)
    assert first(event)["type"] == "TimeoutError"
    assert "refresh_cache" in functions(event)


def test_the_applications_loop_handler_still_runs(
    make_client: Callable[..., Client], server: LocalServer
) -> None:
    """An application that set its own loop exception handler keeps it: it is called with
    the same context as before, and the exception is sent as well."""
    client = make_client(enable_exception_autocapture=True)
    contexts: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    abandon_failed_task(loop)

    [context] = contexts
    assert context["message"] == "Task exception was never retrieved"
    assert isinstance(context["exception"], ValueError)
    settle(client)
    event = only(exceptions(server))
    assert event["properties"]["asyncio_message"] == "Task exception was never retrieved"
    assert first(event)["value"] == "payment provider said no"


def test_asyncios_own_error_line_does_not_send_the_exception_again(
    make_client: Callable[..., Client], server: LocalServer
) -> None:
    """With a PostHogHandler on the ``asyncio`` logger too, asyncio's own ERROR line about
    the abandoned task (which carries the exception) does not make a second
    ``$exception``: the exception is sent once."""
    client = make_client(enable_exception_autocapture=True)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    asyncio_logger = logging.getLogger("asyncio")
    handlers = [posthog_logging.PostHogHandler(client=client), Keep()]
    for handler in handlers:
        asyncio_logger.addHandler(handler)
    try:
        abandon_failed_task(asyncio.new_event_loop())
    finally:
        for handler in handlers:
            asyncio_logger.removeHandler(handler)

    [record] = records  # asyncio did log the exception, at ERROR
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)
    settle(client)
    event = only(exceptions(server))
    assert event["properties"]["$exception_source"] == "python.asyncio_exception_handler"


def test_a_logged_asyncio_error_is_sent_without_autocapture(
    make_client: Callable[..., Client], server: LocalServer
) -> None:
    """Without autocapture, the same abandoned task reaches PostHog only through the
    handler on the ``asyncio`` logger (which shows the line above would have sent it)."""
    client = make_client()
    handler = posthog_logging.PostHogHandler(client=client)
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(handler)
    try:
        abandon_failed_task(asyncio.new_event_loop())
    finally:
        asyncio_logger.removeHandler(handler)

    settle(client)
    event = only(exceptions(server))
    assert event["properties"]["$exception_source"] == "python.logging"
    assert first(event)["value"] == "payment provider said no"
