"""Start the real ASGI servers in subprocesses on 127.0.0.1, and read what they did."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from django_graceful._cli.ports import free_port
from django_graceful._cli.servers import KINDS
from django_graceful._cli.servers import command as server_command

ROOT = Path(__file__).resolve().parent.parent
#: Every kind of server (see ``django_graceful/_cli/servers.py``): "granian" runs the app as
#: ASGI (``--interface asgi``), "granian-rsgi" as RSGI, Granian's default interface
#: (GracefulASGI's ``__rsgi__``); "gunicorn-uvicorn" and "gunicorn-asgi" by worker class.
SERVERS = tuple(KINDS)
#: Servers with a --workers option that runs one lifecycle per worker process.
WORKER_SERVERS = tuple(name for name, kind in KINDS.items() if kind.has_workers)
#: Three servers that deliver a client's leaving, and hold a response, each in a way of its
#: own: uvicorn's protocols (Gunicorn's Uvicorn worker runs them too), Twisted's (Daphne),
#: and Granian's through our RSGI bridge. What only needs that delivery (a shield, a view's
#: timeout, the hang report) runs on these; the delivery itself runs on every server.
DELIVERY_SERVERS = ("uvicorn", "daphne", "granian-rsgi")
#: Gunicorn's flags beyond the user's line: no control socket (by default one path per user,
#: $XDG_RUNTIME_DIR/gunicorn.ctl, for every server at once), a graceful_timeout above
#: every budget the tests set (the test project's hooks alone take 21.5 s; a test that
#: needs another one adds its own, the last one counts), and django_graceful's hooks, as
#: README tells users (the arbiter's exit status).
GUNICORN_FLAGS = [
    "--no-control-socket",
    "--graceful-timeout",
    "60",
    "--config",
    "python:django_graceful.gunicorn_hooks",
]


#: WSGI servers, where no lifecycle runs (``django_graceful/_core/wsgi.py``): Django's
#: ``runserver`` as a project without Daphne runs it (``--noreload``: one process, which the
#: tests signal), and Gunicorn's sync worker and its threaded one (``gthread``, 4 threads).
#: Not among SERVERS: the ASGI tests' servers.
WSGI_SERVERS = ("runserver", "gunicorn-sync", "gunicorn-gthread")
#: The test project's WSGI application (Gunicorn's sync worker serves it).
WSGI_APP = "tests.project.wsgi:application"


def is_rsgi(server: str) -> bool:
    """Whether the app is served over RSGI (whose websockets cannot carry a close code:
    Granian closes an accepted one without any, so a client sees 1005)."""
    return KINDS[server].interface == "rsgi"


#: The close code a websocket client reads when the server closed without one.
WS_NO_STATUS = 1005


def client_close_code(server: str, code: int) -> int:
    """The close code a websocket client reads when the app closed its accepted websocket
    with ``code``: RSGI cannot send one (Granian closes without a code: the client reads
    1005, "no status received")."""
    return WS_NO_STATUS if is_rsgi(server) else code


def command(
    server: str, app: str, port: int, workers: int | None = None, uds: str | None = None
) -> list[str]:
    """The server's command line as a user types it (its console script), on 127.0.0.1 (or
    on the Unix-domain socket ``uds``)."""
    if server == "runserver":
        return [sys.executable, "-m", "django", "runserver", "--noreload", f"127.0.0.1:{port}"]
    if server in ("gunicorn-sync", "gunicorn-gthread"):
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        worker = server.removeprefix("gunicorn-")
        threads = ["--threads", "4"] if worker == "gthread" else []
        more = ["--workers", str(workers)] if workers is not None else []
        bind = ["--bind", f"127.0.0.1:{port}", "--worker-class", worker, *threads]
        return [gunicorn, WSGI_APP, *bind, *more, *GUNICORN_FLAGS]
    kind = KINDS[server]
    cmd = server_command(kind, app, host="127.0.0.1", port=port, workers=workers, uds=uds)
    return cmd + (GUNICORN_FLAGS if kind.server == "gunicorn" else [])


class Server:
    """One server process running the test project."""

    def __init__(
        self,
        server: str,
        *,
        app: str = "tests.project.asgi:application",
        graceful: dict[str, Any] | None = None,
        workers: int | None = None,
        env: dict[str, str] | None = None,
        uds: bool | str = False,
        port: int | None = None,
    ) -> None:
        """``uds``: listen on a Unix-domain socket (True: one in the server's folder; or
        the path given) instead of a TCP port (``port``, or a free one)."""
        self.server = server
        self.dir = Path(tempfile.mkdtemp(prefix=f"graceful-{server}-"))
        self.events_path = self.dir / "events.jsonl"
        self.log_path = self.dir / "server.log"
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        #: The Unix-domain socket path the server listens on instead, if any.
        self.uds = str(self.dir / "app.sock") if uds is True else (uds or None)
        self.cmd = command(server, app, self.port, workers, self.uds)
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "tests.project.settings",
            "GRACEFUL_TEST_EVENTS": str(self.events_path),
            "GRACEFUL_TEST_SETTINGS": json.dumps(graceful or {}),
            "TEST_DB": str(self.dir / "db.sqlite3"),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.signalled_at: float | None = None
        self.exited_at: float | None = None

    def start(self, *, wait: bool = True, timeout: float = 20) -> Server:
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_listening(timeout)
        return self

    def wait_listening(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.server} exited early:\n{self.log()}")
            with contextlib.suppress(OSError), self.connect(timeout=0.2):
                return
            time.sleep(0.05)
        raise AssertionError(f"{self.server} did not listen within {timeout} s:\n{self.log()}")

    def connect(self, timeout: float = 10) -> socket.socket:
        """A new connection to the server (TCP, or its Unix-domain socket)."""
        if self.uds is None:
            return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.uds)
        except OSError:
            sock.close()
            raise
        return sock

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit; the exit code. Fails (and kills) past ``timeout``."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.server} still running {timeout} s after the signal:\n{self.log()}"
            ) from None
        self.exited_at = time.monotonic()
        return code

    @property
    def exit_after(self) -> float:
        assert self.signalled_at is not None and self.exited_at is not None
        return self.exited_at - self.signalled_at

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        rows = [json.loads(line) for line in self.events_path.read_text().splitlines() if line]
        return [r for r in rows if name is None or r["event"] == name]

    def wait_engaged(self, count: int = 1, timeout: float = 20) -> None:
        """Until ``count`` workers have finished starting (their driver took the signals:
        a signal before that meets the server's own handling, or none)."""
        deadline = time.monotonic() + timeout
        while self.log().count("django_graceful started (server:") < count:
            assert time.monotonic() < deadline, f"{count} workers not started in {timeout} s"
            time.sleep(0.05)

    def wait_event(self, name: str, count: int = 1, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"no {count}x {name!r} within {timeout} s; events: {self.events()}")

    def client(self, **kwargs: Any) -> httpx.Client:
        if self.uds is not None:
            kwargs.setdefault("transport", httpx.HTTPTransport(uds=self.uds))
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 10), **kwargs)

    def get(self, path: str, timeout: float = 10) -> httpx.Response:
        with self.client(timeout=timeout) as client:
            return client.get(path)


def lifespan_complaints(log: str) -> list[str]:
    """The lines in which a server complains about the app's lifespan support."""
    needles = ("protocol appears unsupported", "lifespan error", "lifespan errored")
    return [line for line in log.splitlines() if any(n in line.lower() for n in needles)]


@contextlib.contextmanager
def running(server: str, **kwargs: Any) -> Iterator[Server]:
    proc = Server(server, **kwargs)
    try:
        yield proc.start()
    finally:
        proc.kill()


def in_background(fn: Any, *args: Any) -> Future[Any]:
    """Run ``fn(*args)`` in a thread of its own (e.g. a request in flight during a signal)."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(fn, *args)
    pool.shutdown(wait=False)
    return future


def get_or_error(srv: Server, path: str, timeout: float = 30) -> httpx.Response | Exception:
    """The response, or the client-side error (a reset, a refused connection)."""
    try:
        return srv.get(path, timeout=timeout)
    except httpx.HTTPError as exc:
        return exc


def start_with(srv: Server, *args: str) -> Server:
    """Start ``srv`` with extra command-line arguments; kill it if it does not come up."""
    srv.cmd += list(args)
    try:
        return srv.start()
    except BaseException:
        srv.kill()
        raise


def answered(future: Future[Any], status: int, log: str = "", timeout: float = 5) -> httpx.Response:
    """The response a request in flight (``in_background(get_or_error, …)``) got: a
    response (not a client-side error such as a reset) with ``status``."""
    result = future.result(timeout=timeout)
    assert isinstance(result, httpx.Response) and result.status_code == status, (result, log)
    return result


#: What the watchdog logs when the shutdown overran its budget and it ended the process.
WATCHDOG_LINE = "process still alive"


def budget_of(srv: Server) -> float:
    """The shutdown budget the (first) worker of ``srv`` announced when it started."""
    started = r"django_graceful started \(server: .*shutdown budget ([\d.]+) s\)"
    found = re.search(started, srv.log())
    assert found, srv.log()
    return float(found[1])


def stop_holding_a_stubborn_request(
    srv: Server, signum: int = signal.SIGTERM, timeout: float = 20
) -> tuple[int, str, Future[Any]]:
    """``signum`` while a request whose view swallows every cancel is in flight; the exit
    code, the log and the request's future. The watchdog was not needed, the request was
    reported as hung, and the shutdown and the lifespan's exit ran."""
    srv.get("/pid/")
    response = in_background(get_or_error, srv, "/stubborn/")
    srv.wait_event("stubborn-begin")
    srv.signal(signum)
    code = srv.wait_exit(timeout)
    log = srv.log()
    assert WATCHDOG_LINE not in log, log
    assert "hung at shutdown: request GET /stubborn/" in log
    assert srv.events("shutdown") and srv.events("lifespan-exit")
    return code, log, response


def example_env(tmp_path: Path, **env: str) -> dict[str, str]:
    """The environment the example project runs in under ``checkshutdown --drill``, as CI
    runs it: a 1 s grace and a 1 s cancel timeout, its own database and state folder."""
    environ = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    environ.update(
        GRACEFUL_GRACE_PERIOD="1",
        GRACEFUL_CANCEL_TIMEOUT="1",
        EXAMPLE_DB=str(tmp_path / "db.sqlite3"),
        EXAMPLE_STATE_DIR=str(tmp_path / "state"),
        **env,
    )
    return environ


def not_installed(monkeypatch: pytest.MonkeyPatch, *modules: str) -> set[str]:
    """``importlib.util.find_spec`` finds none of ``modules``, as if they (a server, a worker
    class) were not installed; the set, to which a test may add more."""
    missing = set(modules)
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name in missing else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return missing
