"""Gunicorn on the real server, both worker classes: the rows of issue 10, each a check.

``gunicorn-uvicorn`` is ``-k uvicorn_worker.UvicornWorker``, ``gunicorn-asgi`` gunicorn's
native ``--worker-class asgi``. Signals go to the arbiter, as a container runtime or an
operator sends them; what the clients got and what the server logged is asserted.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .servers import (
    WATCHDOG_LINE,
    Server,
    answered,
    get_or_error,
    in_background,
    lifespan_complaints,
    start_with,
    stop_holding_a_stubborn_request,
)

KINDS = pytest.mark.parametrize("kind", ["gunicorn-uvicorn", "gunicorn-asgi"])
SERVER = pytest.mark.server
#: Short hooks, so that a test's budget is what its GRACE_PERIOD and CANCEL_TIMEOUT say.
QUICK_HOOKS = {"HOOK_TIMEOUT": 0.5}


def stopped_cleanly(log: str) -> None:
    """Nothing in the log says a worker was killed or the watchdog had to act."""
    for line in (WATCHDOG_LINE, "WORKER TIMEOUT", "SIGKILL", "SIGABRT", "Traceback"):
        assert line not in log, log


def stop_cleanly(srv: Server, timeout: float = 10) -> None:
    """SIGTERM to the arbiter: it exits 0 within ``timeout`` and nothing was killed."""
    srv.signal()
    assert srv.wait_exit(timeout) == 0
    stopped_cleanly(srv.log())


@contextlib.contextmanager
def engaged(
    kind: str, *args: str, graceful: dict[str, Any], workers: int | None = None
) -> Iterator[Server]:
    """Gunicorn with ``kind``'s workers, started with ``args``, once each worker has taken
    the signals; killed after."""
    srv = start_with(Server(kind, graceful=graceful, workers=workers), *args)
    try:
        srv.wait_engaged(count=workers or 1)
        yield srv
    finally:
        srv.kill()


def statuses(results: list[Any]) -> list[Any]:
    return [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in results]


class Load:
    """Clients sending short requests one after another until stopped (a deploy's traffic)."""

    def __init__(self, srv: Server, clients: int = 3, path: str = "/slow/?s=0.05") -> None:
        self.results: list[Any] = []
        #: When each result came (``time.monotonic()``), in the order of ``results``.
        self.times: list[float] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(srv, path), daemon=True)
            for _ in range(clients)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, srv: Server, path: str) -> None:
        while not self._stop.is_set():
            result = get_or_error(srv, path, timeout=15)
            self.results.append(result)
            self.times.append(time.monotonic())

    def wait_answers_after(self, moment: float, count: int, timeout: float = 10) -> None:
        """Until ``count`` results came after ``moment`` (the load goes on)."""
        deadline = time.monotonic() + timeout
        while sum(t > moment for t in list(self.times)) < count:
            assert time.monotonic() < deadline, f"fewer than {count} answers in {timeout} s"
            time.sleep(0.05)

    def stop(self) -> list[Any]:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)
        return self.results


@SERVER
@KINDS
def test_boot_runs_the_lifespan_and_the_hooks_with_the_gunicorn_adapter(kind: str) -> None:
    with engaged(kind, graceful=QUICK_HOOKS) as srv:
        state = srv.get("/state/").json()
        assert state["pool"] == f"pool-of-{state['pid']}"
        srv.signal()
        assert srv.wait_exit(10) == 0
        log = srv.log()
        assert f"django_graceful started (server: {kind}," in log
        assert "graceful_timeout 60 s, timeout 30 s, max_requests off" in log
        assert lifespan_complaints(log) == []
        assert srv.events("startup") and srv.events("shutdown") and srv.events("lifespan-exit")
        stopped_cleanly(log)


@SERVER
@KINDS
def test_sigterm_lets_the_request_in_flight_finish(kind: str) -> None:
    grace = 10
    with engaged(kind, graceful={"GRACE_PERIOD": grace, **QUICK_HOOKS}) as srv:
        response = in_background(get_or_error, srv, "/slow/?s=1.5")
        srv.wait_event("slow-begin")
        srv.signal()
        answered(response, 200, timeout=10)
        code = srv.wait_exit(grace + 10)
        log = srv.log()
        assert code == 0, log
        assert srv.events("shutdown-started")[0]["trigger"] == "SIGTERM"
        assert srv.exit_after < grace, log  # once idle, not at the end of the grace
        stopped_cleanly(log)


@SERVER
@KINDS
def test_a_hung_request_gets_503_and_the_worker_exits_by_itself(kind: str) -> None:
    grace, cancel = 1, 1
    with engaged(
        kind, graceful={"GRACE_PERIOD": grace, "CANCEL_TIMEOUT": cancel, **QUICK_HOOKS}
    ) as srv:
        stubborn = in_background(get_or_error, srv, "/stubborn/")
        forever = in_background(get_or_error, srv, "/slow/?s=600")
        srv.wait_event("stubborn-begin")
        srv.wait_event("slow-begin")
        srv.signal()
        code = srv.wait_exit(15)
        log = srv.log()
        # STOPPED at grace + cancel (the hooks return at once); then the worker's own stop,
        # and 0.5 s for the tasks that ignore gunicorn's last cancel; 1 s slack.
        assert srv.exit_after < grace + cancel + 2, log
        assert code == 0, log
        for future in (stubborn, forever):
            assert answered(future, 503, log).headers["connection"] == "close"
        assert srv.events("slow-cancelled")[0]["reason"] == "shutdown"
        assert "hung at shutdown: request GET /stubborn/" in log
        assert "tests/project/views.py" in log  # the report says where it hangs
        assert srv.events("shutdown") and srv.events("lifespan-exit")
        stopped_cleanly(log)


@SERVER
@KINDS
def test_without_our_signal_handling_the_stop_is_still_drained_and_bounded(kind: str) -> None:
    graceful = {"GRACE_PERIOD": 1, "CANCEL_TIMEOUT": 1, "HANDLE_SIGNALS": False, **QUICK_HOOKS}
    with engaged(kind, graceful=graceful) as srv:
        response = in_background(get_or_error, srv, "/stubborn/")
        srv.wait_event("stubborn-begin")
        srv.signal()
        code = srv.wait_exit(15)
        log = srv.log()
        answered(response, 503, log)
        assert srv.events("shutdown-started")[0]["trigger"] == "recycle"  # gunicorn's own stop
        assert srv.events("shutdown") and srv.events("lifespan-exit")
        assert code == 0, log
        assert srv.exit_after < 4, log
        stopped_cleanly(log)


@SERVER
@KINDS
def test_an_idle_keep_alive_connection_does_not_hold_the_exit(kind: str) -> None:
    keep_alive = 30
    with engaged(kind, "--keep-alive", str(keep_alive), graceful=QUICK_HOOKS) as srv:
        with srv.client() as client:  # one connection, kept open and idle
            assert client.get("/pid/").status_code == 200
            srv.signal()
            code = srv.wait_exit(keep_alive + 10)
        log = srv.log()
        assert code == 0, log
        assert srv.exit_after < keep_alive / 3, log  # not at the end of gunicorn's keep-alive
        stopped_cleanly(log)


@SERVER
@KINDS
def test_a_budget_longer_than_graceful_timeout_is_shortened_to_fit_before_the_sigkill(
    kind: str,
) -> None:
    # budget: grace 10 + cancel 1 + the hooks' 3.5 s = 14.5 s, in 6 s less 1 s to exit.
    with engaged(
        kind,
        "--graceful-timeout",
        "6",
        graceful={"GRACE_PERIOD": 10, "CANCEL_TIMEOUT": 1, **QUICK_HOOKS},
    ) as srv:
        log = srv.log()
        assert "shutdown budget (14.5 s) does not fit in gunicorn's graceful_timeout (6 s)" in log
        assert "grace 0.5s, cancel 1s" in log
        code, log, response = stop_holding_a_stubborn_request(srv, timeout=10)
        answered(response, 503, log)
        assert code == 0, log
        assert srv.exit_after < 6, log
        stopped_cleanly(log)


@SERVER
@KINDS
def test_recycling_keeps_the_heartbeat_so_a_request_longer_than_timeout_finishes(
    kind: str,
) -> None:
    with engaged(
        kind, "--max-requests", "2", "--timeout", "3", graceful={"GRACE_PERIOD": 10, **QUICK_HOOKS}
    ) as srv:
        slow = in_background(get_or_error, srv, "/slow/?s=5")
        begun = srv.wait_event("slow-begin")
        for _ in range(2):  # both count a request once its response is complete
            assert srv.get("/pid/").status_code == 200
        started = srv.wait_event("shutdown-started")
        assert started[0]["trigger"] == "recycle"
        log = srv.log()
        answered(slow, 200, log, timeout=15)
        assert "stops by itself (max_requests" in log
        # The next worker serves once the recycled one is gone.
        srv.wait_event("startup", count=2, timeout=20)
        assert srv.get("/pid/").status_code == 200
        recycled = begun[0]["pid"]
        assert [e["pid"] for e in srv.events("shutdown")] == [recycled]
        stop_cleanly(srv)


@SERVER
@KINDS
def test_recycling_workers_refuse_nothing_while_their_siblings_serve(kind: str) -> None:
    with engaged(kind, "--max-requests", "15", graceful=QUICK_HOOKS, workers=2) as srv:
        load = Load(srv)
        deadline = time.monotonic() + 30
        while len(srv.events("shutdown")) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        results = load.stop()
        log = srv.log()
        assert len(srv.events("shutdown")) >= 3, log
        # "lifespan": gunicorn's own stop came first, with nothing in flight to drain.
        assert {e["trigger"] for e in srv.events("shutdown-started")} <= {"recycle", "lifespan"}
        assert set(statuses(results)) == {200}, (statuses(results), log)
        stop_cleanly(srv)


@SERVER
@KINDS
@pytest.mark.parametrize("signame", ["SIGHUP", "SIGTTOU"])
def test_reload_and_fewer_workers_refuse_nothing_and_finish_what_the_old_workers_hold(
    kind: str, signame: str
) -> None:
    with engaged(kind, graceful={"GRACE_PERIOD": 10, **QUICK_HOOKS}, workers=2) as srv:
        old = {e["pid"] for e in srv.events("startup")}
        held = [in_background(get_or_error, srv, "/slow/?s=2") for _ in range(4)]
        srv.wait_event("slow-begin", count=4)
        load = Load(srv)
        time.sleep(0.3)
        srv.signal(getattr(signal, signame))
        stopping = 2 if signame == "SIGHUP" else 1
        srv.wait_event("shutdown", count=stopping, timeout=15)
        load.wait_answers_after(time.monotonic(), count=5)  # after the old workers left
        results = load.stop()
        log = srv.log()
        assert statuses([f.result(timeout=10) for f in held]) == [200] * 4, log
        assert set(statuses(results)) == {200}, (statuses(results), log)
        stopped = srv.events("shutdown-started")
        assert {e["pid"] for e in stopped} <= old and len(stopped) == stopping
        assert {e["trigger"] for e in stopped} == {"SIGTERM"}
        assert "other workers take the new connections" in log
        stop_cleanly(srv, 15)


@SERVER
@KINDS
def test_the_arbiters_repeated_sigterm_never_ends_a_worker_that_exits_by_itself(
    kind: str,
) -> None:
    """The arbiter sends SIGTERM again, once a second, to a worker it has one too many of
    (TTOU, a reload), until the worker is gone; here every 5 ms, so that one lands in
    each step of the worker's exit (the event loop's close among them)."""
    with engaged(kind, graceful=QUICK_HOOKS, workers=2) as srv:
        held = in_background(get_or_error, srv, "/slow/?s=0.5")
        srv.wait_event("slow-begin")
        srv.signal(signal.SIGTTOU)
        (stopping,) = srv.wait_event("shutdown-started")
        pid = stopping["pid"]
        deadline = time.monotonic() + 10
        with contextlib.suppress(ProcessLookupError):
            while time.monotonic() < deadline:
                os.kill(pid, signal.SIGTERM)
                time.sleep(0.005)
        assert time.monotonic() < deadline, f"worker {pid} still there after 10 s"
        assert statuses([held.result(timeout=10)]) == [200]
        log = srv.log()
        assert "Exception ignored" not in log, log
        if kind == "gunicorn-asgi":  # uvicorn ends its worker with the signal it stopped on
            assert f"Worker (pid:{pid}) was sent" not in log, log
        stop_cleanly(srv)


@SERVER
@KINDS
@pytest.mark.parametrize("stop", ["SIGQUIT", "SIGINT", "ctrl-c"])
def test_a_quick_stop_cancels_at_once_and_still_runs_the_hooks(kind: str, stop: str) -> None:
    workers = 2 if stop == "ctrl-c" else 1
    with engaged(kind, graceful={"GRACE_PERIOD": 20, "CANCEL_TIMEOUT": 1}, workers=workers) as srv:
        response = in_background(get_or_error, srv, "/slow/?s=60")
        srv.wait_event("slow-begin")
        if stop == "ctrl-c":
            # SIGINT to the arbiter and each worker; the arbiter then sends them SIGQUIT.
            assert srv.proc is not None
            srv.signalled_at = time.monotonic()
            os.killpg(srv.proc.pid, signal.SIGINT)
        else:
            srv.signal(getattr(signal, stop))
        code = srv.wait_exit(15)
        log = srv.log()
        answered(response, 503, log)
        assert srv.events("slow-cancelled")[0]["reason"] == "shutdown"
        started = srv.events("shutdown-started")
        assert len(started) == workers
        assert {e["trigger"] for e in started} <= {"SIGQUIT", "SIGINT"}
        assert len(srv.events("shutdown")) == len(srv.events("lifespan-exit")) == workers
        assert "quick stop, skipping to CANCELLING" in log
        assert "skipping to REPORTING" not in log  # the arbiter's SIGQUIT after a Ctrl-C
        assert code == 0, log
        assert srv.exit_after < 3, log
        stopped_cleanly(log)


@SERVER
@KINDS
def test_a_quick_stop_during_a_stop_fits_in_the_arbiters_two_seconds(kind: str) -> None:
    # CANCEL_TIMEOUT 5 would outlast the 2 s the arbiter leaves after its SIGINT.
    with engaged(kind, graceful={"GRACE_PERIOD": 20, "CANCEL_TIMEOUT": 5, **QUICK_HOOKS}) as srv:
        response = in_background(get_or_error, srv, "/stubborn/")
        srv.wait_event("stubborn-begin")
        srv.signal()
        srv.wait_event("shutdown-started")
        time.sleep(0.3)
        assert srv.proc is not None
        quick_at = time.monotonic()
        srv.proc.send_signal(signal.SIGINT)  # the arbiter: quick stop, SIGKILL 2 s later
        code = srv.wait_exit(15)
        log = srv.log()
        answered(response, 503, log)
        assert srv.events("shutdown") and srv.events("lifespan-exit")
        assert "hung at shutdown: request GET /stubborn/" in log
        assert code == 0, log
        assert time.monotonic() - quick_at < 2, log
        stopped_cleanly(log)


def test_not_detected_outside_a_gunicorn_worker() -> None:
    from django_graceful.adapters import gunicorn, gunicorn_asgi, gunicorn_uvicorn

    # Imported, but no worker runs this thread (e.g. pytest in-process).
    importlib.import_module("gunicorn.workers.gasgi")

    assert gunicorn.Gunicorn.find(sys.modules) is None
    assert gunicorn_asgi.running(sys.modules) is False
    assert gunicorn_uvicorn.running(sys.modules) is False
    assert gunicorn.Gunicorn.problem(None, (27, 0, 1), (24,)) is not None


def test_a_native_worker_without_the_expected_internals_is_not_relied_on() -> None:
    from django_graceful.adapters import gunicorn_asgi

    class Cfg:
        graceful_timeout, timeout = 30, 30

    class Worker:
        cfg, max_requests, alive, ppid, sockets, servers = Cfg(), sys.maxsize, True, 1, [], []

        def notify(self) -> None: ...

        def handle_quit_signal(self) -> None: ...

        async def _serve(self) -> None: ...

    importlib.import_module("gunicorn.asgi.protocol")
    found = gunicorn_asgi.Gasgi.find(Worker())
    assert found is not None
    assert gunicorn_asgi.Gasgi.problem(Worker(), found) is None
    assert gunicorn_asgi.Gasgi.problem(Worker(), None) is not None
    worker = Worker()
    worker.servers = None  # type: ignore[assignment]
    assert "servers" in (gunicorn_asgi.Gasgi.problem(worker, found) or "")


def test_a_gunicorn_outside_the_known_versions_is_not_relied_on() -> None:
    from django_graceful.adapters import gunicorn

    class Cfg:
        graceful_timeout, timeout = 30, 30

    class Worker:
        cfg, max_requests, alive, ppid, sockets = Cfg(), sys.maxsize, True, 1, []

        def notify(self) -> None: ...

    assert gunicorn.Gunicorn.problem(Worker(), (27, 0, 1), (24,)) is None
    assert "older than 24" in (gunicorn.Gunicorn.problem(Worker(), (23, 0), (24,)) or "")
    assert gunicorn.Gunicorn.problem(Worker(), (28, 0), (24,)) is None  # warned, engaged
    worker = Worker()
    worker.cfg = object()
    assert gunicorn.Gunicorn.problem(worker, (27, 0, 1), (24,)) is not None
