"""What every benchmark shares: its servers (started, always ended), set-up and results.

The benchmarks' small equivalent of ``tests/servers.py``: each server kind runs on its
usual command line (the user's line of ``django_graceful/_cli/servers.py``: ``uvicorn``,
``hypercorn``, ``granian --interface asgi``, ``daphne``, ``gunicorn`` with the Uvicorn
worker or its own ``--worker-class asgi``; ``granian-rsgi``, Granian on its default RSGI
interface, for ``bench/rsgi.py``) in a process group of its own; the bench project's two
variants; bounded waits; what each benchmark's ``main()`` shares (its arguments, the
versions its header names, the results file); and a blocking raw-socket HTTP client that
tells a full response from a cut one and from no answer at all.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from django_graceful._cli.ports import free_port
from django_graceful._cli.servers import KINDS
from django_graceful._cli.servers import command as server_command
from django_graceful._diagnosis.drill import group_members

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
#: The server kinds a benchmark's ``--servers`` chooses from (Granian's RSGI interface has
#: a benchmark of its own: bench/rsgi.py).
SERVERS = tuple(name for name, kind in KINDS.items() if kind.interface != "rsgi")
#: The distributions each server kind runs on (for the versions a table names).
PACKAGES = {name: kind.distributions for name, kind in KINDS.items()}

#: variant -> (ASGI app, settings module)
VARIANTS: dict[str, tuple[str, str]] = {
    "plain": ("bench.project.asgi_plain:application", "bench.project.settings_plain"),
    "graceful": ("bench.project.asgi:application", "bench.project.settings"),
}
LABELS = {"plain": "plain Django", "graceful": "django_graceful"}

_started: list[Server] = []


class ServerError(RuntimeError):
    """A server did not start (its log tail is in the message)."""


def command(
    server: str,
    app: str,
    port: int,
    extra: Sequence[str] = (),
    workers: int | None = None,
) -> list[str]:
    """The command line a user would type for the kind ``server``, on 127.0.0.1:``port``,
    then ``extra``."""
    kind = KINDS[server]
    return [*server_command(kind, app, host="127.0.0.1", port=port, workers=workers), *extra]


def version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version(package)
    except PackageNotFoundError:
        return "?"


class Server:
    """One server process (``server``: a kind, e.g. ``granian-rsgi``) running one variant
    of the bench project."""

    def __init__(
        self,
        server: str,
        variant: str,
        *,
        log_path: Path,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
        workers: int | None = None,
    ) -> None:
        app, settings = VARIANTS[variant]
        self.server = server
        self.variant = variant
        self.port = free_port()
        self.log_path = log_path
        self.cmd = command(server, app, self.port, extra, workers)
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


# -- what each benchmark's main() shares: arguments, set-up, versions, the results file --

#: How a package's name is written in a header (others: as on PyPI).
TITLES = {"django": "Django", "channels": "Channels", "granian": "Granian"}


def arguments(
    doc: str | None,
    *,
    servers: bool = False,
    variants: Iterable[str] = (),
    default_variants: Iterable[str] | None = None,
) -> argparse.ArgumentParser:
    """A benchmark's parser: its description the first paragraph of ``doc``; ``--servers`` (the
    kinds of :data:`SERVERS`, all by default) if ``servers``; ``--variants`` (all of
    ``variants`` by default, or ``default_variants``) if any."""
    parser = argparse.ArgumentParser(description=" ".join((doc or "").split("\n\n")[0].split()))
    if servers:
        parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    choices = list(variants)
    if choices:
        default = choices if default_variants is None else list(default_variants)
        parser.add_argument("--variants", nargs="+", choices=choices, default=default)
    return parser


def begin() -> float:
    """Set a run up: no server outlives it (:func:`install_cleanup`), bench/results/
    exists; the time it began (``time.monotonic()``)."""
    install_cleanup()
    RESULTS.mkdir(parents=True, exist_ok=True)
    return time.monotonic()


def versions(*packages: str, servers: Iterable[str] = ()) -> str:
    """``Python 3.13.1, Django 6.1, Channels 4.3``: Python's version and ``packages``'; then
    ``; uvicorn 0.38, gunicorn 25.1, uvicorn-worker 0.4``: the distributions ``servers``
    (kinds) run on, each once."""
    named = ", ".join(f"{TITLES.get(p, p)} {version(p)}" for p in packages)
    text = f"Python {platform.python_version()}" + (f", {named}" if named else "")
    runs_on = dict.fromkeys(p for s in servers for p in PACKAGES[s])
    return text + ("; " + ", ".join(f"{p} {version(p)}" for p in runs_on) if runs_on else "")


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages: ``0.52 0.61 0.70``."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    """``2 CPUs, load avg at start 0.52 0.61 0.70`` (the neighbours' load stretches wall
    times)."""
    return f"{os.cpu_count()} CPUs, load avg at start {load_average()}"


def log(text: str) -> None:
    """A progress line, on stderr (stdout is the tables)."""
    print(text, file=sys.stderr, flush=True)


def publish(name: str, text: str, began: float | None = None) -> Path:
    """Print ``text`` (the tables) and write it to bench/results/``name``; with ``began``,
    say on stderr how long the run took and where its files are."""
    text = text.rstrip()
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(text + "\n")
    if began is not None:
        log(f"\n(total {time.monotonic() - began:.0f} s; {path}; server logs in {RESULTS})")
    return path


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
