"""Start an ASGI server on 127.0.0.1 in a process group of its own, and always end it.

The benchmarks' small equivalent of ``tests/servers.py``: the usual command line of
each server (``uvicorn``/``hypercorn``/``granian --interface asgi``/``daphne``, and
``gunicorn`` with the Uvicorn worker or its own ``--worker-class asgi``; Granian on
its default RSGI interface too, for ``bench/rsgi.py``), the
bench project's two variants, bounded waits, and a blocking raw-socket HTTP client
that tells a full response from a cut one and from no answer at all.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from django_graceful._diagnosis.drill import group_members

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"
SERVERS = ("uvicorn", "hypercorn", "granian", "daphne", "gunicorn-uvicorn", "gunicorn-asgi")
#: The distributions each server kind runs on (for the versions a table names).
PACKAGES = {
    "uvicorn": ("uvicorn",),
    "hypercorn": ("hypercorn",),
    "granian": ("granian",),
    "daphne": ("daphne",),
    "gunicorn-uvicorn": ("gunicorn", "uvicorn-worker"),
    "gunicorn-asgi": ("gunicorn",),
}

#: variant -> (ASGI app, settings module)
VARIANTS: dict[str, tuple[str, str]] = {
    "plain": ("bench.project.asgi_plain:application", "bench.project.settings_plain"),
    "graceful": ("bench.project.asgi:application", "bench.project.settings"),
}
LABELS = {"plain": "plain Django", "graceful": "django_graceful"}

_started: list[Server] = []


class ServerError(RuntimeError):
    """A server did not start (its log tail is in the message)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Granian's interfaces ``command()`` takes: ``asgi`` is what the other servers speak;
#: ``rsgi`` (Granian's default) is Granian's command line without ``--interface``.
GRANIAN_INTERFACES = ("asgi", "rsgi")


def command(
    server: str,
    app: str,
    port: int,
    extra: tuple[str, ...] = (),
    interface: str = "asgi",
) -> list[str]:
    """The command line a user would type, on 127.0.0.1:``port``.

    ``interface`` is Granian's (see ``GRANIAN_INTERFACES``); the other servers speak ASGI
    only.
    """
    if interface != "asgi" and (server != "granian" or interface not in GRANIAN_INTERFACES):
        raise ValueError(f"{server} does not serve interface {interface!r}")
    if server == "uvicorn":
        cmd = [str(BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port)]
    elif server == "hypercorn":
        cmd = [str(BIN / "hypercorn"), app, "--bind", f"127.0.0.1:{port}"]
    elif server == "granian":
        cmd = [str(BIN / "granian")]
        if interface != "rsgi":  # RSGI is Granian's default: no flag, as a user types it
            cmd += ["--interface", interface]
        cmd += ["--host", "127.0.0.1", "--port", str(port), app]
    elif server == "daphne":
        cmd = [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), app]
    elif server == "gunicorn-uvicorn":  # as Django's deployment docs show it
        cmd = [str(BIN / "gunicorn"), app, "-k", "uvicorn_worker.UvicornWorker"]
        cmd += ["--bind", f"127.0.0.1:{port}"]
    elif server == "gunicorn-asgi":
        cmd = [str(BIN / "gunicorn"), app, "--worker-class", "asgi"]
        cmd += ["--bind", f"127.0.0.1:{port}"]
    else:
        raise ValueError(f"unknown server {server!r}")
    return cmd + list(extra)


def version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version(package)
    except PackageNotFoundError:
        return "?"


class Server:
    """One server process running one variant of the bench project."""

    def __init__(
        self,
        server: str,
        variant: str,
        *,
        log_path: Path,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        interface: str = "asgi",
    ) -> None:
        app, settings = VARIANTS[variant]
        self.server = server
        self.variant = variant
        self.interface = interface
        self.port = free_port()
        self.log_path = log_path
        self.cmd = command(server, app, self.port, extra, interface)
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": settings,
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.signalled_at: float | None = None

    def start(self) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _started.append(self)
        return self

    def wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise ServerError(f"{self.server} ({self.variant}) exited early:\n{self.tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        raise ServerError(f"{self.server} ({self.variant}) not listening after {timeout:g} s")

    def terminate(self) -> None:
        """SIGTERM to the server's main process (what a process manager sends)."""
        assert self.proc is not None
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> float | None:
        """Seconds from the SIGTERM to the main process's exit; None if still running."""
        assert self.proc is not None and self.signalled_at is not None
        try:
            self.proc.wait(max(0.0, self.signalled_at + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None
        return time.monotonic() - self.signalled_at

    def group_alive(self, within: float = 1.0) -> bool:
        """Whether anything of the process group is still alive ``within`` s from now."""
        assert self.proc is not None
        deadline = time.monotonic() + within
        while group_members(self.proc.pid):
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.05)
        return False

    def kill(self) -> None:
        """SIGKILL the whole process group (workers too) and reap the main process."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self in _started:
            _started.remove(self)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait at most ``timeout`` s, then kill whatever is left."""
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()
            self.wait_exit(timeout)
        self.kill()

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def kill_all() -> None:
    """Kill every server still running (at exit, on SIGTERM/SIGINT to the benchmark)."""
    for server in list(_started):
        server.kill()


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    """Make SIGTERM behave like Ctrl-C: ``finally`` blocks run and no server outlives us."""
    atexit.register(kill_all)
    signal.signal(signal.SIGTERM, _exit_on_signal)


# -- a blocking HTTP/1.1 client that reports exactly what came back ---------------------


@dataclass
class Reply:
    status: int | None = None
    content_length: int | None = None
    body_bytes: int = 0
    complete: bool = False
    error: str | None = None
    elapsed: float = 0.0

    def describe(self) -> str:
        if self.status is None:
            return f"nothing ({self.error})" if self.error else "nothing"
        return str(self.status)

    def body(self) -> str:
        if self.status is None:
            return "-"
        if self.complete:
            return "yes"
        expected = "?" if self.content_length is None else str(self.content_length)
        return f"no ({self.body_bytes}/{expected} B)"


def http_get(port: int, path: str, timeout: float) -> Reply:
    """GET ``path`` with ``Connection: close``; read until EOF, error or ``timeout``."""
    reply = Reply()
    began = time.monotonic()
    deadline = began + timeout
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=min(timeout, 5.0)) as sock:
            request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            sock.sendall(request.encode())
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    reply.error = f"no end within {timeout:g} s"
                    break
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except ConnectionResetError:
        reply.error = "connection reset"
    except TimeoutError:
        reply.error = f"no end within {timeout:g} s"
    except OSError as exc:
        reply.error = f"{type(exc).__name__}: {exc}"
    reply.elapsed = time.monotonic() - began
    _parse(data, reply)
    if reply.status is None and reply.error is None:
        reply.error = "connection closed" if not data else "garbled response"
    return reply


def _parse(data: bytes, reply: Reply) -> None:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return
    lines = head.split(b"\r\n")
    parts = lines[0].split()
    if len(parts) < 2 or not parts[1].isdigit():
        return
    reply.status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if b"content-length" in headers:
        reply.content_length = int(headers[b"content-length"])
        reply.body_bytes = min(len(body), reply.content_length)
        reply.complete = len(body) >= reply.content_length
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        reply.body_bytes, reply.complete = _dechunk(body)
    else:
        reply.body_bytes = len(body)
        reply.complete = reply.error is None  # close-delimited: complete if it ended cleanly


def _dechunk(body: bytes) -> tuple[int, bool]:
    """(bytes of payload, whether the last chunk arrived)."""
    total = 0
    while True:
        size_line, sep, rest = body.partition(b"\r\n")
        if not sep:
            return total, False
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            return total, False
        if size == 0:
            return total, True
        total += min(size, len(rest))
        if len(rest) < size + 2:
            return total, False
        body = rest[size + 2 :]


def wait_for_mark(path: Path, event: str, timeout: float) -> bool:
    """Wait (bounded) until a view wrote ``event`` to the marks file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and any(
            line.startswith(event + " ") for line in path.read_text().splitlines()
        ):
            return True
        time.sleep(0.01)
    return False
