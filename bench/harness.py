"""What every benchmark shares: its servers (started, always ended), set-up and results.

The benchmarks' small equivalent of ``tests/servers.py``: each server kind runs on its
usual command line (the user's line of ``django_graceful/_cli/servers.py``: ``uvicorn``,
``hypercorn``, ``granian --interface asgi``, ``daphne``, ``gunicorn`` with the Uvicorn
worker or its own ``--worker-class asgi``; ``granian-rsgi``, Granian on its default RSGI
interface) in a process group of its own; the bench project's variants; bounded waits;
what each benchmark's ``main()`` shares (its arguments, the versions its header names, the
results file); a blocking raw-socket HTTP client that tells a full response from a cut one
and from no answer at all; and what loads a server for a round (``wrk``, else a keep-alive
asyncio client) and reads the CPU time its process tree spent on it.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from types import FrameType

from django_graceful._cli.ports import free_port
from django_graceful._cli.servers import KINDS
from django_graceful._cli.servers import command as server_command
from django_graceful._diagnosis.drill import group_members

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
#: The server kinds a benchmark's ``--servers`` chooses from (Granian's RSGI interface is
#: measured by bench/request_cost.py, which names it itself).
SERVERS = tuple(name for name, kind in KINDS.items() if kind.interface != "rsgi")
#: The distributions each server kind runs on (for the versions a table names).
PACKAGES = {name: kind.distributions for name, kind in KINDS.items()}
#: How the tables name each server kind (README's words).
SERVER_NAMES = {
    "uvicorn": "Uvicorn",
    "hypercorn": "Hypercorn",
    "granian": "Granian `--interface asgi`",
    "granian-rsgi": "Granian RSGI",
    "daphne": "Daphne",
    "gunicorn-uvicorn": "Gunicorn `-k uvicorn_worker.UvicornWorker`",
    "gunicorn-asgi": "Gunicorn `--worker-class asgi`",
}

#: variant -> (ASGI app, settings module): plain Django, and django_graceful with
#: ``REUSE_SYNC_THREADS`` off (``graceful``) or as it comes (``graceful-reuse``, on).
VARIANTS: dict[str, tuple[str, str]] = {
    "plain": ("bench.project.asgi_plain:application", "bench.project.settings_plain"),
    "graceful": ("bench.project.asgi:application", "bench.project.settings"),
    "graceful-reuse": ("bench.project.asgi:application", "bench.project.settings_reuse"),
}
LABELS = {
    "plain": "plain Django",
    "graceful": "django_graceful",
    "graceful-reuse": "django_graceful, reused threads",
}

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
    content: bytes = b""  # the body as it came (chunked: with its framing)

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
    reply.content = body
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


class EventSource:
    """A client holding ``GET /events/`` (the bench project's endless server-sent events)
    open, read in a thread of its own until it ends: whether the body ended as a chunked
    body should (its last chunk) or was cut."""

    def __init__(self, port: int, timeout: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(
            b"GET /events/ HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
        )
        self.data = b""
        self._first = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                self.data += chunk
                if b"data: 0" in self.data:
                    self._first.set()
        except OSError:
            pass
        finally:
            self.sock.close()
            self._first.set()  # or it ended before its first event: ``data`` tells

    def wait_open(self, timeout: float) -> bool:
        """Whether the first event came within ``timeout`` s."""
        return self._first.wait(timeout) and b"data: 0" in self.data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def ending(self, timeout: float) -> str:
        """How the stream ended: "terminated", "cut", or "still open" after ``timeout`` s."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            return "still open"
        return "terminated" if self.data.endswith(b"0\r\n\r\n") else "cut"


# -- loading a server for a round, and the CPU time its process tree spent on it -------


@dataclass
class Load:
    """One round of load on one server."""

    rps: float
    requests: int  # completed answers (what the server's CPU time is divided by)
    errors: int  # socket errors, timeouts, non-2xx, wrong bodies
    p99_ms: float | None = None  # the 99th percentile of the latency, if measured


#: ``load(port, path, connections, seconds)``: one round of load on one server.
LoadFn = Callable[[int, str, int, int], Load]

_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def wrk_load(port: int, path: str, connections: int, duration: int) -> Load:
    """``wrk -t1 -c<connections> --latency`` for ``duration`` s: requests/s, answers, errors
    and the p99 of wrk's latency distribution."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "--latency"]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, check=False)
    out = done.stdout
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if done.returncode != 0 or rps is None or total is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{out}\n{done.stderr}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.MULTILINE)
    p99_ms = float(p99.group(1)) * _WRK_UNITS[p99.group(2)] if p99 else None
    return Load(float(rps.group(1)), int(total.group(1)), errors, p99_ms)


@dataclass
class _Counts:
    ok: int = 0  # 2xx answers completed before the deadline
    done: int = 0  # every answer completed (the server did the work of each)
    errors: int = 0


async def read_response_body(reader: asyncio.StreamReader, head: bytes) -> int | None:
    """Read the body after ``head`` (framed by Content-Length or chunked): its length in
    bytes; None for a body framed neither way (this client cannot tell where it ends)."""
    match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if match is not None:
        size = int(match.group(1))
        await reader.readexactly(size)
        return size
    if re.search(rb"(?i)\r\ntransfer-encoding:[^\r]*chunked", head) is None:
        return None
    total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";", 1)[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, if any
                pass
            return total
        await reader.readexactly(size + 2)  # the chunk and its CRLF
        total += size


async def _keep_alive(
    port: int,
    path: str,
    deadline: float,
    counts: _Counts,
    latencies: list[float],
    expect: int | None,
) -> None:
    """One keep-alive connection sending requests back to back until ``deadline``.

    ``latencies`` gets the seconds from each counted request's write to its body's last
    byte; an answer whose body is not ``expect`` bytes long (when given) is an error.
    """
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        counts.errors += 1
        return
    try:
        while time.monotonic() < deadline:
            began = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            size = await read_response_body(reader, head)
            if size is None:
                counts.errors += 1
                return
            counts.done += 1
            if time.monotonic() > deadline:
                return  # finished after the bell: not counted
            if head[9:10] == b"2" and (expect is None or size == expect):
                counts.ok += 1
                latencies.append(time.perf_counter() - began)
            else:
                counts.errors += 1
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        counts.errors += 1
    finally:
        writer.close()


def quantile(ordered: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of the sorted ``ordered`` (nan if empty)."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def python_load_async(
    port: int, path: str, connections: int, duration: float, expect: int | None = None
) -> Load:
    """``connections`` keep-alive connections loading ``path`` for ``duration`` s; an
    answer whose body is not ``expect`` bytes long (when given) is an error."""
    counts = _Counts()
    latencies: list[float] = []
    deadline = time.monotonic() + duration
    tasks = [
        asyncio.ensure_future(_keep_alive(port, path, deadline, counts, latencies, expect))
        for _ in range(connections)
    ]
    _, pending = await asyncio.wait(tasks, timeout=duration + 10)
    for task in pending:  # a server that stopped answering: give up on it
        task.cancel()
        counts.errors += 1
    if pending:
        await asyncio.wait(pending, timeout=5)
    latencies.sort()
    p99 = quantile(latencies, 0.99) * 1e3 if latencies else None
    return Load(counts.ok / duration, counts.done, counts.errors, p99)


def python_load(port: int, path: str, connections: int, duration: int) -> Load:
    return asyncio.run(python_load_async(port, path, connections, duration))


def load_client(client: str, connections: int) -> tuple[LoadFn, str]:
    """The client that loads the servers: ``wrk`` (``client`` ``wrk``, or ``auto`` and wrk
    on PATH: ``apt-get install wrk``) or the asyncio one; and how a table names it."""
    use_wrk = client == "wrk" or (client == "auto" and shutil.which("wrk"))
    if not use_wrk:
        tool = f"asyncio raw-socket keep-alive HTTP/1.1 client, {connections} connections"
        return python_load, tool
    if not shutil.which("wrk"):
        raise SystemExit("--client wrk: wrk is not on PATH")
    banner = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (banner.stdout or banner.stderr).splitlines()
    return wrk_load, f"{first[0].split(' [')[0] if first else 'wrk'} -t1 -c{connections}"


def cpu_seconds(pid: int) -> float | None:
    """user + system CPU seconds of a process, all its threads (Linux /proc); None where
    unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """user + system CPU seconds of the processes of group ``pgid`` alive now (a server
    and its workers: Granian and Gunicorn run the app in a worker process)."""
    return sum(cpu_seconds(pid) or 0.0 for pid in group_members(pgid))


def uvicorn_flavour() -> str:
    http = "httptools" if find_spec("httptools") else "h11"
    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    return f"Uvicorn {version('uvicorn')} (1 worker, {http}, {loop} loop, --no-access-log)"


def rotation(round_no: int, keys: Sequence[str]) -> list[str]:
    """Round-robin: each round starts one key later, so that over ``len(keys)`` rounds
    each key has run in each position once (ABC, BCA, CAB; AB, BA for two)."""
    shift = round_no % len(keys)
    return [*keys[shift:], *keys[:shift]]


def source_state() -> str:
    """The commit measured, and whether django_graceful had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "django_graceful"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "commit unknown"
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    if not changed:
        return f"commit {head}"
    return f"commit {head} + uncommitted changes in {', '.join(changed)}"
