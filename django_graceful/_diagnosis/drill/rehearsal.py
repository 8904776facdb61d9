"""The drill's steps: start the server, load it, wait, SIGTERM, time the exit, then judge."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
import types
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..._cli.launch import app_target, asgi_application_path, command_line
from ..._cli.ports import free_port
from ..._cli.servers import ServerNotInstalled, kind_of
from ..._core.lifecycle import get_lifecycle
from ..._core.phases import EXIT_SLACK
from ...conf import ImproperlyConfiguredGraceful, get_settings
from ..status import CANNOT_CHECK
from ..stores import (
    DRILL_HOST,
    PROCESS_LOCAL_CACHES,
    READ_TIMEOUT,
    BoundedStore,
    Store,
    open_store,
)
from . import client, live, output, processes
from .model import DEFAULT_SERVER, Answer, Drill, DrillError
from .render import show
from .verdict import judge

DEFAULTS: dict[str, Any] = {"server": DEFAULT_SERVER, "urls": ["/"], "concurrency": 1, "wait": 0.0}
#: Seconds for the server to answer its first request.
READY_TIMEOUT = 30.0
#: Seconds past ``budget + EXIT_SLACK`` before the drill kills the server's process group.
KILL_MARGIN = 10.0
#: Seconds a client waits for the server beyond the time the drill would kill it.
CLIENT_MARGIN = 30.0
#: Tries with a new port when the one picked was taken meanwhile.
PORT_TRIES = 3
POLL = 0.1


class Interrupted(BaseException):
    """The drill itself got SIGTERM or SIGHUP (a cancelled CI job, a closed terminal): stop,
    and take the server down."""


#: The signals that end the drill cleanly (SIGINT: KeyboardInterrupt). On SIGKILL the
#: server dies with it (``processes.dies_with_this_process``), and its files are aged out.
ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def main(options: dict[str, Any], stdout: Any, stderr: Any) -> int:
    """``checkshutdown --drill``: run it, show it, return the exit status."""
    drill = Drill()
    try:
        run(drill, options)
    except DrillError as exc:
        drill.status, drill.reason, drill.tail = CANNOT_CHECK, f"cannot drill: {exc}", exc.tail
    except Interrupted as exc:
        drill.status, drill.reason = CANNOT_CHECK, f"cannot drill: {exc} (server stopped)"
    except KeyboardInterrupt:
        drill.status, drill.reason = CANNOT_CHECK, "cannot drill: interrupted (server stopped)"
    show(drill, options.get("json", False), stdout, stderr)
    return drill.status


def run(drill: Drill, options: dict[str, Any]) -> None:
    """Fill ``drill`` in; raises :class:`DrillError` when it cannot run."""
    wait = options.get("wait") or DEFAULTS["wait"]
    store, target, env = prepare(drill, options)
    with tempfile.TemporaryDirectory(prefix="graceful-drill-") as folder, _signals_end_drill():
        log_path = Path(folder) / "server.log"
        try:
            proc = start(drill, target, env, log_path)
            try:
                _drill(drill, proc, store, log_path, wait)
            finally:
                processes.end(proc)
        finally:
            forget(store, drill.host)


def prepare(drill: Drill, options: dict[str, Any]) -> tuple[Store, str, dict[str, str]]:
    """Check ``options`` into ``drill`` (server, urls, budget, a fresh host id); the
    state store to read, the server's target and its environment."""
    drill.server = options.get("server") or DEFAULTS["server"]
    drill.urls = list(options.get("urls") or DEFAULTS["urls"])
    drill.concurrency = options.get("concurrency") or DEFAULTS["concurrency"]
    for url in drill.urls:
        client.check_url(url)
    try:
        kind = kind_of(
            drill.server,
            worker_class=options.get("worker_class"),
            interface=options.get("interface"),
        )
    except ValueError as exc:
        raise DrillError(str(exc)) from None
    drill.worker_class, drill.interface = kind.worker_class, kind.interface
    store = _store(options.get("timeout") or READ_TIMEOUT)
    path = asgi_application_path()
    if path is None:
        raise DrillError("set ASGI_APPLICATION in settings (e.g. 'myproject.asgi.application')")
    try:
        target = app_target(path)
    except ValueError as exc:
        raise DrillError(str(exc)) from None
    drill.budget = get_lifecycle().budget()
    drill.host = f"{DRILL_HOST}{secrets.token_hex(4)}"
    from django.conf import settings

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": str(settings.SETTINGS_MODULE),
        "GRACEFUL_HOST_ID": drill.host,
        "PYTHONUNBUFFERED": "1",
    }
    return store, target, env


def _store(timeout: float) -> Store:
    """The state store, each read bounded by ``timeout`` (a store that does not answer
    is given up on, once)."""
    try:
        settings = get_settings()
    except ImproperlyConfiguredGraceful as exc:
        raise DrillError(f"GRACEFUL settings are invalid: {exc}") from None
    if settings.STATE_BACKEND == "cache":
        from django.conf import settings as django_settings

        caches = getattr(django_settings, "CACHES", {})
        backend = caches.get(settings.STATE_CACHE, {}).get("BACKEND")
        if backend in PROCESS_LOCAL_CACHES:
            raise DrillError(
                f"GRACEFUL['STATE_CACHE'] {settings.STATE_CACHE!r} is a "
                f"{backend.rsplit('.', 1)[-1]}, private to each process: the drill cannot "
                "read the server's report (graceful.W002); use a shared cache or "
                "STATE_BACKEND 'file'"
            )
    return BoundedStore(open_store(settings), timeout)


def start(
    drill: Drill, target: str, env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """The server, answering HTTP; a new port if the one picked was taken meanwhile."""
    assert drill.budget is not None
    for attempt in range(1, PORT_TRIES + 1):
        drill.port = free_port(client.HOST)
        try:
            drill.argv = command_line(
                drill.server,
                target,
                host=client.HOST,
                port=drill.port,
                workers=None,
                budget=drill.budget,
                worker_class=drill.worker_class,
                interface=drill.interface,
            )
        except (ServerNotInstalled, ValueError) as exc:
            raise DrillError(str(exc)) from None
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                drill.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the drill can end it all
                preexec_fn=processes.dies_with_this_process(),  # even if the drill is killed
            )
        drill.pid = proc.pid
        try:
            _wait_ready(proc, drill.port, log_path)
        except DrillError as exc:
            processes.end(proc)
            if output.port_taken(exc.tail) and attempt < PORT_TRIES:
                continue
            raise
        except BaseException:
            processes.end(proc)
            raise
        return proc
    raise AssertionError("unreachable")


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    """Until the server answers an HTTP request (any status); bounded."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        code = proc.poll()
        if code is not None:
            raise DrillError(
                f"the server exited with code {code} before it answered", output.tail(log_path)
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DrillError(
                f"the server did not answer HTTP within {READY_TIMEOUT:g} s",
                output.tail(log_path),
            )
        if client.answers(port, min(5.0, remaining)):
            return
        time.sleep(POLL)


def _drill(
    drill: Drill, proc: subprocess.Popen[bytes], store: Store, log_path: Path, wait: float
) -> None:
    assert drill.budget is not None and drill.port is not None
    # A socket timeout, never hit while the server lives (its budget may yet grow, below).
    client_timeout = wait + drill.budget + EXIT_SLACK + KILL_MARGIN + CLIENT_MARGIN
    drill.sent_at = time.monotonic()
    threads = []
    for url in drill.urls:
        for _ in range(drill.concurrency):
            outcome = Answer(url)
            drill.outcomes.append(outcome)
            thread = threading.Thread(
                target=client.fetch,
                args=(drill.port, url, client_timeout, outcome),
                name=f"drill {url}",
                daemon=True,
            )
            thread.start()
            threads.append(thread)
    seen_pids = _settle(drill, proc, store)
    if wait:
        time.sleep(wait)
    drill.seen_in_flight = sum(o.ended is None for o in drill.outcomes)
    stop(drill, proc, store, log_path, seen_pids)
    for thread in threads:
        thread.join(max(0.1, (drill.exited_at or 0.0) + 5 - time.monotonic()))


def stop(
    drill: Drill,
    proc: subprocess.Popen[bytes],
    store: Store,
    log_path: Path,
    seen_pids: set[int],
) -> None:
    """SIGTERM the server, time its exit (killed past the budget and margins), then judge
    what its workers left (``seen_pids``: those seen publishing)."""
    assert drill.budget is not None
    limit = drill.budget + EXIT_SLACK + KILL_MARGIN
    if proc.poll() is not None:
        raise DrillError(
            f"the server exited with code {proc.returncode} before SIGTERM",
            output.tail(log_path),
        )
    drill.signalled_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # the main process only, as a container runtime does
    try:
        drill.exit_code = proc.wait(limit)
        drill.exited_at = time.monotonic()
    except subprocess.TimeoutExpired:
        drill.exited_at = time.monotonic()
        drill.killed = True
        processes.kill_group(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            drill.exit_code = proc.wait(5)
    drill.leftover = processes.outlived(proc.pid)
    said = output.read(log_path)
    drill.watchdog = output.watchdog_acted(said)
    drill.log = output.noteworthy(said)
    judge(drill, store, seen_pids, said)


def _settle(drill: Drill, proc: subprocess.Popen[bytes], store: Store) -> set[int]:
    """Wait until the live snapshots show every request in flight (or it ended); bounded.

    Returns the pids of the drill's workers seen publishing."""
    path = live.snapshot_path
    expected = Counter(path(url) for url in drill.urls for _ in range(drill.concurrency))
    heartbeat = get_settings().HEARTBEAT
    limit = max(5.0, 3 * heartbeat + 1)
    deadline = time.monotonic() + limit
    pids: set[int] = set()
    while True:
        said = live.read(store, drill.host)
        in_flight, budget = said.in_flight, said.budget
        pids |= said.pids
        if budget is not None and drill.budget is not None and budget > drill.budget + 0.05:
            # hooks the server registers itself (e.g. when asgi.py is imported)
            drill.notes.append(
                f"the server's shutdown budget is {budget:.1f} s (this process counted "
                f"{drill.budget:.1f} s: hooks registered in the server): using it"
            )
            drill.budget = budget
        ended = Counter(path(o.url) for o in drill.outcomes if o.ended is not None)
        if all(in_flight[p] + ended[p] >= n for p, n in expected.items()):
            return pids
        if time.monotonic() > deadline or proc.poll() is not None:
            missing = sum(max(0, n - in_flight[p] - ended[p]) for p, n in expected.items())
            drill.notes.append(
                f"{missing} of {sum(expected.values())} requests not seen in flight within "
                f"{limit:g} s; SIGTERM sent all the same"
                if pids
                else f"no live snapshot from the server within {limit:g} s"
            )
            return pids
        time.sleep(POLL)


@contextlib.contextmanager
def _signals_end_drill() -> Iterator[None]:
    """While the drill runs, its own SIGTERM or SIGHUP takes the server down."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum: int, frame: types.FrameType | None) -> None:
        raise Interrupted(f"the drill got {signal.Signals(signum).name}")

    previous = {signum: signal.signal(signum, interrupted) for signum in ENDING_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def forget(store: Store, host: str) -> None:
    """Remove the drill server's snapshots and reports (host ``host``), nothing else."""
    with contextlib.suppress(Exception):  # a store that fails now must not hide the verdict
        store.forget_host(host)
