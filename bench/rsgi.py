"""Django through django_graceful on Granian's RSGI interface, next to plain Django on Granian's
ASGI interface, in one run: requests per second, latency and server CPU time per request.

The goal it measures: (b) should be FASTER than (a), not merely equal.

Variants, each a Granian server (its usual command line, 1 worker, Granian's defaults),
all up at once on 127.0.0.1:

(a) plain Django on ``granian --interface asgi`` (``bench.project.asgi_plain``): the baseline;
(b) django_graceful on Granian's default RSGI interface (``bench.project.asgi``: GracefulASGI
    and GracefulMiddleware; ``__rsgi__`` bridges to Django's ASGI handler);
(c) django_graceful on ``granian --interface asgi``: with (b), what the RSGI bridge gains or
    costs against Granian's own ASGI;
(d) plain Django on RSGI through django-rsgi (``bench.project.rsgi_plain``), where it runs
    (Python >= 3.12, Django >= 6.0, ``pip install -e .[bench]``); no websockets there.

Workloads: ``json`` (a small ``JsonResponse``), ``stream`` (a ``StreamingHttpResponse`` of
16 x 64 KiB from an async iterator, sent chunked; the client counts that all 1 MiB came)
and ``ws`` (a Channels echo consumer, ``bench.project.asgi_ws``/``asgi_ws_plain``: text
messages echoed back to back on each websocket). The load client is this process:
``--connections`` keep-alive HTTP/1.1 connections (the raw-socket asyncio client of
``bench/overhead.py``), or as many websockets (a minimal raw-socket client), each sending
its next request when the previous answer is complete, for ``--duration`` s.

Method (as in ``bench/overhead.py``): rounds interleave the variants, the order rotating
each round, so drift and the neighbours' load hit all alike. Each cell is the median
(min .. max) of the rounds; the ratios against (a) are the median of each round's ratio
(its variants ran back to back). CPU time per request is the user + system time of the
server's process group (Granian's main process and its worker) over the answers it
completed: the steadier number on a shared machine, where other processes' load
stretches wall time, not CPU time. Latency is from the request's write to its answer's
last byte, at this concurrency (a closed loop: p50 is about connections / req/s).

``--variants e f`` adds an app with no framework on each interface: what Granian's ASGI
and RSGI cost by themselves, the most the interface alone can give or take.

``--in-process`` starts no server: it drives each path in this process (plain Django and
GracefulASGI over ASGI in memory, GracefulASGI and django-rsgi over a fake RSGI
protocol), times the bridge's steps one by one, and profiles the paths with cProfile:
where the time goes, line by line, without a server's noise.

Run: ``.venvs/py311/bin/python bench/rsgi.py`` and ``.venvs/py313/bin/python bench/rsgi.py``
(about 3 minutes each; ``--help``: ``--rounds``, ``--duration``, ``--connections``,
``--workloads``, ``--variants``, ``--budget``, ``--in-process``). The table goes to stdout
and to ``bench/results/rsgi-py3XX[...].md``, the server logs next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path: the repository instead (a
# file of bench/ would shadow a package: bench/websockets.py the ``websockets`` package).
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from bench.harness import (  # noqa: E402
    RESULTS,
    VARIANTS,
    Server,
    ServerError,
    begin,
    log,
    publish,
    version,
    versions,
)
from bench.overhead import Load, _Counts, _python_load, group_cpu_seconds  # noqa: E402
from bench.project.views import JSON_BODY_SIZE, STREAM_SIZE  # noqa: E402
from django_graceful._cli.servers import kind_of  # noqa: E402

#: Apps this benchmark adds to the harness's variants: (app, settings module).
APPS = {
    "ws-plain": ("bench.project.asgi_ws_plain:application", "bench.project.settings_ws_plain"),
    "ws-graceful": ("bench.project.asgi_ws:application", "bench.project.settings_ws"),
    "django-rsgi": ("bench.project.rsgi_plain:application", "bench.project.settings_plain"),
    "bare-asgi": ("bench.project.bare:asgi_app", "bench.project.settings_plain"),
    "bare-rsgi": ("bench.project.bare:rsgi_app", "bench.project.settings_plain"),
    "graceful-reuse": ("bench.project.asgi:application", "bench.project.settings_reuse"),
    "ws-graceful-reuse": ("bench.project.asgi_ws:application", "bench.project.settings_ws_reuse"),
}
WS_PATH = "/ws/"
WS_MESSAGE = b"hello, echo!"
#: Longest wait for a websocket's handshake.
WS_TIMEOUT = 10.0
#: How long the client waits for the server's answer to its close frame (a late one is
#: counted, not an error: the echoes are what is measured).
WS_CLOSE_WAIT = 1.0


@dataclass(frozen=True)
class Variant:
    key: str
    name: str
    http_app: str  # a key of the harness's VARIANTS
    ws_app: str | None  # None: no websockets
    interface: str  # Granian's

    @property
    def server(self) -> str:
        """The server kind: ``granian`` (ASGI) or ``granian-rsgi``."""
        return kind_of("granian", interface=self.interface).name


@dataclass(frozen=True)
class Workload:
    key: str
    name: str
    path: str
    expect: int | None  # body bytes every answer must have
    websocket: bool = False

    @property
    def unit(self) -> str:
        return "echo" if self.websocket else "request"

    @property
    def units(self) -> str:
        return "echoes" if self.websocket else "requests"


ALL_VARIANTS = (
    Variant("a", "(a) plain Django, Granian ASGI", "plain", "ws-plain", "asgi"),
    Variant("b", "(b) django_graceful, Granian RSGI", "graceful", "ws-graceful", "rsgi"),
    Variant("c", "(c) django_graceful, Granian ASGI", "graceful", "ws-graceful", "asgi"),
    Variant("d", "(d) django-rsgi, Granian RSGI", "django-rsgi", None, "rsgi"),
    Variant("e", "(e) no framework, Granian ASGI", "bare-asgi", "bare-asgi", "asgi"),
    Variant("f", "(f) no framework, Granian RSGI", "bare-rsgi", "bare-rsgi", "rsgi"),
    Variant(
        "g",
        "(g) django_graceful + REUSE_SYNC_THREADS, Granian RSGI",
        "graceful-reuse",
        "ws-graceful-reuse",
        "rsgi",
    ),
    Variant(
        "h",
        "(h) django_graceful + REUSE_SYNC_THREADS, Granian ASGI",
        "graceful-reuse",
        "ws-graceful-reuse",
        "asgi",
    ),
)
#: Run unless --variants says otherwise; (e) and (f), the interfaces' own cost, on demand.
DEFAULT_VARIANTS = ("a", "b", "c", "d", "g", "h")
BASELINE = "a"
WORKLOADS = (
    Workload("json", "small JSON (JsonResponse)", "/json/", JSON_BODY_SIZE),
    Workload("stream", "1 MiB streamed (16 x 64 KiB, chunked)", "/stream/", STREAM_SIZE),
    Workload("ws", "websocket echo (Channels consumer)", WS_PATH, None, websocket=True),
)


def django_rsgi_missing() -> str | None:
    """Why django-rsgi cannot run here; None if it can."""
    if sys.version_info < (3, 12):
        return f"django-rsgi needs Python >= 3.12 (this is {platform.python_version()})"
    django = version("django")
    if django == "?" or int(django.split(".")[0]) < 6:
        return f"django-rsgi needs Django >= 6.0 (this is {django})"
    if find_spec("django_rsgi") is None:
        return "django-rsgi is not installed (pip install -e .[bench])"
    return None


def granian_loop() -> str:
    """The event loop Granian's ``--loop auto`` picks here (rloop, uvloop, else asyncio)."""
    return next((name for name in ("rloop", "uvloop") if find_spec(name)), "asyncio")


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


# -- the websocket client ------------------------------------------------------------


@dataclass
class _WsCounts(_Counts):
    late_closes: int = 0  # the server answered the client's close after WS_CLOSE_WAIT


async def _ws_echoes(port: int, deadline: float, counts: _WsCounts, latencies: list[float]) -> None:
    """One websocket sending a text message and awaiting its echo, back to back until
    ``deadline``: a minimal RFC 6455 client (masked with a zero key, short frames only)."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), WS_TIMEOUT
        )
    except (OSError, TimeoutError):
        counts.errors += 1
        return
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {WS_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "\r\n".encode()
    )
    frame = bytes([0x81, 0x80 | len(WS_MESSAGE)]) + b"\0\0\0\0" + WS_MESSAGE
    expected = bytes([0x81, len(WS_MESSAGE)]) + WS_MESSAGE
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WS_TIMEOUT)
        if head[9:12] != b"101":
            counts.errors += 1
            return
        while time.monotonic() < deadline:
            began = time.perf_counter()
            writer.write(frame)
            answer = await reader.readexactly(len(expected))
            counts.done += 1
            if time.monotonic() > deadline:
                break  # echoed after the bell: not counted
            if answer == expected:
                counts.ok += 1
                latencies.append(time.perf_counter() - began)
            else:
                counts.errors += 1
                return
        writer.write(b"\x88\x82\0\0\0\0\x03\xe8")  # close, 1000
        try:  # the server's close frame, then EOF
            await asyncio.wait_for(reader.read(), WS_CLOSE_WAIT)
        except TimeoutError:
            counts.late_closes += 1
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        counts.errors += 1
    finally:
        writer.close()


async def _ws_load(
    port: int, connections: int, duration: float, latencies: list[float]
) -> tuple[Load, int]:
    """The load, and how many websockets had their close answered late."""
    counts = _WsCounts()
    deadline = time.monotonic() + duration
    tasks = [
        asyncio.ensure_future(_ws_echoes(port, deadline, counts, latencies))
        for _ in range(connections)
    ]
    _, pending = await asyncio.wait(tasks, timeout=duration + 2 * WS_TIMEOUT)
    for task in pending:
        task.cancel()
        counts.errors += 1
    if pending:
        await asyncio.wait(pending, timeout=5)
    return Load(counts.ok / duration, counts.done, counts.errors), counts.late_closes


# -- measuring -----------------------------------------------------------------------


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None  # server CPU per completed answer
    errors: int
    late_closes: int = 0


@dataclass
class Cell:
    """One variant on one workload: a sample per round."""

    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    late_closes: int = 0
    websockets: int = 0

    def values(self, name: str) -> list[float]:
        return [v for s in self.samples if (v := getattr(s, name)) is not None]


def quantile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(server: Server, workload: Workload, connections: int, duration: float) -> Sample:
    assert server.proc is not None
    latencies: list[float] = []
    late = 0
    before = group_cpu_seconds(server.proc.pid)
    if workload.websocket:
        load, late = asyncio.run(_ws_load(server.port, connections, duration, latencies))
    else:
        load = asyncio.run(
            _python_load(
                server.port, workload.path, connections, duration, latencies, workload.expect
            )
        )
    after = group_cpu_seconds(server.proc.pid)
    latencies.sort()
    cpu = (after - before) / load.requests * 1e6 if load.requests else None
    return Sample(
        rps=load.rps,
        p50_ms=quantile(latencies, 0.5) * 1e3,
        p99_ms=quantile(latencies, 0.99) * 1e3,
        cpu_us=cpu,
        errors=load.errors,
        late_closes=late,
    )


def order(round_no: int, keys: list[str]) -> list[str]:
    """Round-robin: each round starts one variant later, so that over len(keys) rounds
    each variant has run in each position once."""
    shift = round_no % len(keys)
    return keys[shift:] + keys[:shift]


# -- the report ----------------------------------------------------------------------


def spread(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:.{digits}f} ({min(values):.{digits}f} .. {max(values):.{digits}f})"


def paired(cell: Cell, base: Cell, name: str) -> list[float]:
    """Each round's ratio of ``cell`` to ``base`` (the two ran back to back)."""
    out = []
    for mine, theirs in zip(cell.samples, base.samples, strict=False):
        a, b = getattr(mine, name), getattr(theirs, name)
        if a is not None and b:
            out.append(a / b)
    return out


def ratio_text(ratios: list[float]) -> str:
    if not ratios:
        return "-"
    return f"{statistics.median(ratios):.3f} ({min(ratios):.2f} .. {max(ratios):.2f})"


def verdict(cell: Cell, base: Cell, name: str, workload: Workload) -> str:
    """``name``'s variant against (a): faster in every round, slower in every round, or mixed."""
    rps = paired(cell, base, "rps")
    cpu = paired(cell, base, "cpu_us")
    faster_rps = sum(r > 1 for r in rps)
    cheaper_cpu = sum(r < 1 for r in cpu)
    rounds = len(rps)
    if not rounds:
        return f"{name}: no rounds"
    if faster_rps == rounds and cheaper_cpu == len(cpu):
        word = "FASTER than (a) in every round"
    elif faster_rps == 0 and cheaper_cpu == 0:
        word = "SLOWER than (a) in every round"
    else:
        word = "mixed"
    rps_pct = (statistics.median(rps) - 1) * 100
    cpu_pct = (statistics.median(cpu) - 1) * 100 if cpu else float("nan")
    return (
        f"{name}: {word}: {workload.units}/s {rps_pct:+.1f} % (more in {faster_rps}/{rounds} "
        f"rounds), CPU per {workload.unit} {cpu_pct:+.1f} % (less in {cheaper_cpu}/{len(cpu)} "
        "rounds)"
    )


def table(workload: Workload, cells: dict[str, Cell], variants: list[Variant]) -> list[str]:
    base = cells[BASELINE]
    rounds = min(len(c.samples) for c in cells.values())
    lines = [
        f"### {workload.name}: {rounds} rounds",
        "",
        f"| variant | {workload.units}/s | p50 ms | p99 ms | server CPU µs/{workload.unit} | "
        f"{workload.units}/s ÷ (a) | CPU/{workload.unit} ÷ (a) | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in variants:
        cell = cells.get(variant.key)
        if cell is None:
            continue
        is_base = variant.key == BASELINE
        lines.append(
            f"| {variant.name} | {spread(cell.values('rps'), 0)} | "
            f"{spread(cell.values('p50_ms'), 2)} | {spread(cell.values('p99_ms'), 2)} | "
            f"{spread(cell.values('cpu_us'), 0)} | "
            f"{'1' if is_base else ratio_text(paired(cell, base, 'rps'))} | "
            f"{'1' if is_base else ratio_text(paired(cell, base, 'cpu_us'))} | "
            f"{cell.errors} |"
        )
    lines.append("")
    if workload.websocket:
        late = ", ".join(
            f"({key}) {cell.late_closes}/{cell.websockets}" for key, cell in cells.items()
        )
        lines += [
            f"Websockets whose close frame the server answered later than {WS_CLOSE_WAIT:g} s "
            f"(not in the numbers above): {late}.",
            "",
        ]
    for variant in variants:
        if variant.key != BASELINE and variant.key in cells:
            lines.append("- " + verdict(cells[variant.key], base, f"({variant.key})", workload))
    if "b" in cells and "c" in cells:
        bridge = cells["b"]
        asgi = cells["c"]
        rps = paired(bridge, asgi, "rps")
        cpu = paired(bridge, asgi, "cpu_us")
        if rps and cpu:
            lines.append(
                f"- the RSGI bridge, (b) against (c): {workload.units}/s "
                f"{(statistics.median(rps) - 1) * 100:+.1f} %, CPU per {workload.unit} "
                f"{(statistics.median(cpu) - 1) * 100:+.1f} %"
            )
    return [*lines, ""]


# -- in process: where the time goes (--in-process) ----------------------------------


class RSGIHeaders(dict[str, str]):
    """Granian's RSGI headers: a mapping of lower-case names (``get``, ``items``, ``in``)."""


@dataclass
class FakeScope:
    """An RSGI scope as Granian gives it for this benchmark's requests."""

    path: str
    proto: str = "http"
    http_version: str = "1.1"
    method: str = "GET"
    scheme: str = "http"
    query_string: str = ""
    client: str = "127.0.0.1:50000"
    server: str = "127.0.0.1:8000"
    root_path: str = ""
    authority: str | None = None
    headers: RSGIHeaders = field(
        default_factory=lambda: RSGIHeaders({"host": "127.0.0.1:8000", "user-agent": "bench"})
    )


class FakeStream:
    """Granian's ``response_stream`` transport: awaitable sends."""

    def __init__(self, proto: FakeHTTP) -> None:
        self.proto = proto

    async def send_bytes(self, data: bytes) -> None:
        self.proto.size += len(data)

    async def send_str(self, data: str) -> None:
        self.proto.size += len(data.encode())


class FakeHTTP:
    """Granian's RSGI HTTP protocol, in memory: an empty body, a client that never leaves,
    responses counted. Granian's futures are asyncio futures here (``add_done_callback``,
    ``cancel``, awaitable)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.status = 0
        self.size = 0

    def __call__(self) -> asyncio.Future[bytes]:
        body: asyncio.Future[bytes] = self.loop.create_future()
        body.set_result(b"")
        return body

    def __aiter__(self) -> FakeHTTP:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration

    def client_disconnect(self) -> asyncio.Future[None]:
        return self.loop.create_future()  # never resolved: cancelled when done with

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status = status

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.size = status, self.size + len(body)

    def response_str(self, status: int, headers: list[tuple[str, str]], body: str) -> None:
        self.status, self.size = status, self.size + len(body.encode())

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> FakeStream:
        self.status = status
        return FakeStream(self)


@dataclass
class FakeMessage:
    kind: int
    data: str | bytes


class FakeTransport:
    """Granian's websocket transport: ``count`` text messages, then the client's close."""

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.left = count
        self.sent = 0

    def _done(self, value: object) -> asyncio.Future[object]:
        future: asyncio.Future[object] = self.loop.create_future()
        future.set_result(value)
        return future

    def receive(self) -> asyncio.Future[object]:
        if self.left:
            self.left -= 1
            return self._done(FakeMessage(2, WS_MESSAGE.decode()))
        return self._done(FakeMessage(0, b""))

    def send_str(self, data: str) -> asyncio.Future[object]:
        self.sent += 1
        return self._done(None)

    def send_bytes(self, data: bytes) -> asyncio.Future[object]:
        self.sent += 1
        return self._done(None)


class FakeWebsocket:
    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.transport = FakeTransport(loop, count)

    async def accept(self) -> FakeTransport:
        return self.transport

    def close(self, status: int | None = None) -> tuple[int, bool]:
        return (status or 1000, True)


class ASGIExchange:
    """An ASGI server's receive/send in memory (what Granian's ASGI interface does in Rust):
    the request, then a disconnect awaited until cancelled; or a websocket's connect,
    ``count`` text messages and a disconnect."""

    def __init__(self, loop: asyncio.AbstractEventLoop, websocket: bool, count: int = 0) -> None:
        self.loop = loop
        self.websocket = websocket
        self.left = count
        self.started = False
        self.status = 0
        self.size = 0
        self.sent = 0

    async def receive(self) -> dict[str, object]:
        if not self.started:
            self.started = True
            if self.websocket:
                return {"type": "websocket.connect"}
            return {"type": "http.request", "body": b"", "more_body": False}
        if self.websocket:
            if self.left:
                self.left -= 1
                return {"type": "websocket.receive", "text": WS_MESSAGE.decode()}
            return {"type": "websocket.disconnect", "code": 1000}
        await self.loop.create_future()  # resolved never: cancelled by the app
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, object]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]  # type: ignore[assignment]
        elif kind == "http.response.body":
            self.size += len(message.get("body", b""))  # type: ignore[arg-type]
        elif kind == "websocket.send":
            self.sent += 1


def asgi_scope(path: str, websocket: bool) -> dict[str, object]:
    """The scope Granian's ASGI interface gives for the same request."""
    scope: dict[str, object] = {
        "type": "websocket" if websocket else "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "ws" if websocket else "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench")],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "extensions": {"http.response.pathsend": {}},
    }
    if websocket:
        scope["subprotocols"] = []
    else:
        scope["method"] = "GET"
    return scope


@dataclass(frozen=True)
class Driver:
    """One way of calling an app in process: over ASGI in memory, or over fake RSGI."""

    key: str
    name: str
    rsgi: bool
    app: object


async def drive_once(driver: Driver, workload: Workload, echoes: int) -> int:
    """One request (or one websocket of ``echoes`` echoes); the units of work done."""
    loop = asyncio.get_running_loop()
    app: Any = driver.app
    if driver.rsgi:
        scope = FakeScope(workload.path, proto="ws" if workload.websocket else "http")
        if workload.websocket:
            ws = FakeWebsocket(loop, echoes)
            await app.__rsgi__(scope, ws)
            if ws.transport.sent != echoes:
                raise RuntimeError(f"{driver.name}: {ws.transport.sent} of {echoes} echoes")
            return echoes
        http = FakeHTTP(loop)
        await app.__rsgi__(scope, http)
        status, size = http.status, http.size
    else:
        exchange = ASGIExchange(loop, workload.websocket, echoes)
        await app(asgi_scope(workload.path, workload.websocket), exchange.receive, exchange.send)
        if workload.websocket:
            if exchange.sent != echoes:
                raise RuntimeError(f"{driver.name}: {exchange.sent} of {echoes} echoes")
            return echoes
        status, size = exchange.status, exchange.size
    if status != 200 or size != workload.expect:
        raise RuntimeError(f"{driver.name} {workload.key}: {status}, {size} bytes")
    return 1


async def drive_many(driver: Driver, workload: Workload, count: int, echoes: int) -> float:
    """CPU µs per unit of work of the event loop's thread: everything of the path but the
    sync work Django hands to a thread (the same on every path; and that thread's start,
    a new one per request, is much of the noise)."""
    gc.collect()
    units = 0
    began = time.thread_time()
    for _ in range(count):
        units += await drive_once(driver, workload, echoes)
    return (time.thread_time() - began) / units * 1e6


def in_process_drivers(with_django_rsgi: bool) -> dict[str, list[Driver]]:
    """The drivers for HTTP and for websockets (Django set up on the ws settings)."""
    import logging

    from django.conf import settings
    from django.test.utils import override_settings

    from bench.overhead import GRACEFUL, GRACEFUL_MIDDLEWARE, PLAIN, build_apps

    apps = build_apps(noise_floor=False, settings_module="bench.project.settings_ws")
    from bench.project import asgi_ws, asgi_ws_plain

    http = [
        Driver("a", "plain Django, ASGI in memory", False, apps[PLAIN]),
        Driver("b", "GracefulASGI, fake RSGI", True, apps[GRACEFUL]),
        Driver("c", "GracefulASGI, ASGI in memory", False, apps[GRACEFUL]),
    ]
    if with_django_rsgi:
        from django_rsgi import get_rsgi_application

        without = [m for m in settings.MIDDLEWARE if m != GRACEFUL_MIDDLEWARE]
        with override_settings(MIDDLEWARE=without):
            http.append(Driver("d", "django-rsgi, fake RSGI", True, get_rsgi_application()))
    logging.getLogger("django_graceful").setLevel(logging.WARNING)
    ws = [
        Driver("a", "plain Channels, ASGI in memory", False, asgi_ws_plain.application),
        Driver("b", "GracefulASGI, fake RSGI", True, asgi_ws.application),
        Driver("c", "GracefulASGI, ASGI in memory", False, asgi_ws.application),
    ]
    return {"http": http, "ws": ws}


async def in_process(args: argparse.Namespace, with_django_rsgi: bool) -> list[str]:
    from bench.overhead import lifespan_startup

    drivers = in_process_drivers(with_django_rsgi)
    shutdown = await lifespan_startup(drivers["http"][1].app, timeout=10)  # type: ignore[arg-type]
    workloads = [w for w in WORKLOADS if w.key in args.workloads]
    # Many short batches: a neighbour's burst spoils a few, and the low percentiles hold.
    batches = args.rounds * 8
    counts = {"json": max(1, args.iterations // 8), "stream": max(1, args.iterations // 32)}
    counts["ws"] = 1
    echoes = max(1, args.iterations // 8)
    cpu: dict[tuple[str, str], list[float]] = {}
    try:
        for workload in workloads:
            for driver in drivers["ws" if workload.websocket else "http"]:
                await drive_many(driver, workload, max(1, counts[workload.key] // 4), echoes)
        for batch in range(batches):
            for workload in workloads:
                group = drivers["ws" if workload.websocket else "http"]
                by_key = {d.key: d for d in group}
                for key in order(batch, list(by_key)):
                    value = await drive_many(by_key[key], workload, counts[workload.key], echoes)
                    cpu.setdefault((workload.key, key), []).append(value)
            if batch % 8 == 7:
                log(f"in-process: {batch + 1} of {batches} batches")
        profiles = [
            await profile(d, w, counts[w.key] * 4, echoes, args.profile_top)
            for w in workloads
            for d in drivers["ws" if w.websocket else "http"]
            if d.key in ("a", "b", "c")
        ]
        steps = await micro(max(200, args.iterations * 5))
    finally:
        await shutdown()
    lines = [
        f"### In process: the event loop thread's CPU µs per request (per echo), {batches} "
        "interleaved batches; 10th percentile / median of the batches; the servers' own "
        "work left out (Granian's Rust), the Python of each path in",
        "",
        "| workload | " + " | ".join(d.name for d in drivers["http"]) + " |",
        "|---|" + "---:|" * len(drivers["http"]),
    ]
    for workload in workloads:
        group = drivers["ws" if workload.websocket else "http"]
        cells = [low_mid(cpu[workload.key, d.key]) for d in group]
        names = "" if not workload.websocket else " (" + "; ".join(d.name for d in group) + ")"
        lines.append(f"| {workload.key}{names} | " + " | ".join(cells) + " |")
    lines.append("")
    for workload in workloads:
        low = {key: p10(values) for (w, key), values in cpu.items() if w == workload.key}
        lines.append(
            f"- {workload.key} (10th percentiles): GracefulASGI on ASGI adds "
            f"{low['c'] - low['a']:+.1f} µs to plain Django; the RSGI bridge adds "
            f"{low['b'] - low['c']:+.1f} µs to that (fake RSGI against ASGI in memory: a "
            "server that costs nothing)"
        )
    lines += ["", *steps]
    for block in profiles:
        lines += block
    return lines


def p10(values: list[float]) -> float:
    return quantile(sorted(values), 0.1)


def low_mid(values: list[float]) -> str:
    return f"{p10(values):.1f} / {statistics.median(values):.1f}"


async def micro(n: int) -> list[str]:
    """The RSGI bridge's steps for one JSON request, each timed alone (this thread's CPU,
    µs per call, best of 5 runs of ``n`` calls): what each line of the bridge costs."""
    from django_graceful._serving import rsgi as bridge

    loop = asyncio.get_running_loop()
    scope = FakeScope("/json/")
    proto = FakeHTTP(loop)
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"77")],
    }
    body = {"type": "http.response.body", "body": b"x" * 77, "more_body": False}

    async def best(step: Callable[[], Awaitable[object]]) -> float:
        runs = []
        for _ in range(5):
            began = time.thread_time()
            for _ in range(n):
                await step()
            runs.append((time.thread_time() - began) / n * 1e6)
        return min(runs)

    async def nothing() -> None:
        return None

    async def scope_only() -> None:
        bridge.http_scope(scope)

    async def headers_only() -> None:
        bridge._headers(scope)

    async def connection() -> None:
        bridge.HTTPConnection(proto, scope)

    async def first_receive() -> None:
        await bridge.HTTPConnection(proto, scope).receive()

    async def watch(receive: Callable[[], Awaitable[object]]) -> None:
        task = loop.create_task(receive())  # Django's listen_for_disconnect
        await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def disconnect_rsgi() -> None:
        conn = bridge.HTTPConnection(proto, scope)
        await conn.receive()
        await watch(conn.receive)

    async def disconnect_asgi() -> None:
        exchange = ASGIExchange(loop, websocket=False)
        await exchange.receive()
        await watch(exchange.receive)

    async def send_start() -> None:
        await bridge.HTTPConnection(proto, scope).send(start)

    async def send_both() -> None:
        conn = bridge.HTTPConnection(proto, scope)
        await conn.send(start)
        await conn.send(body)

    base = await best(nothing)
    conn = await best(connection) - base
    first = await best(first_receive) - base
    started = await best(send_start) - base
    both = await best(send_both) - base
    rsgi_watch = await best(disconnect_rsgi) - base
    asgi_watch = await best(disconnect_asgi) - base
    rows = [
        (
            "`http_scope(scope)` (the ASGI scope dict; Granian's ASGI builds it in Rust)",
            await best(scope_only) - base,
        ),
        (
            "  of which `_headers(scope)` (every header encoded to bytes)",
            await best(headers_only) - base,
        ),
        ("`HTTPConnection(proto, scope)` (`__init__`: the body's framing from the headers)", conn),
        ("first `receive()`: the empty body", first - conn),
        ("`send(http.response.start)` (headers decoded to str)", started - conn),
        ("`send(http.response.body)`: `response_bytes`", both - started),
        (
            "disconnect watch: `receive()` after the body, in a task, cancelled at the end "
            "(`_disconnected`: a future, `client_disconnect()`, its callback, `cancel()`)",
            rsgi_watch - first,
        ),
        (
            "  the same over ASGI in memory (one future, cancelled)",
            asgi_watch - (await best(lambda: ASGIExchange(loop, False).receive()) - base),
        ),
    ]
    # Websockets: one message in and one out, through the bridge and straight to Granian.
    transport = FakeTransport(loop, 10**9)
    text_message = {"type": "websocket.send", "text": WS_MESSAGE.decode()}

    async def ws_open() -> Any:
        conn = bridge.WebsocketConnection(FakeWebsocket(loop, 0))
        conn._transport = transport
        conn._connected = True
        return conn

    conn_ws = await ws_open()

    async def direct_receive() -> None:
        await transport.receive()

    async def bridge_receive() -> None:
        await conn_ws.receive()

    async def direct_send() -> None:
        await transport.send_str(WS_MESSAGE.decode())

    async def bridge_send() -> None:
        await conn_ws.send(text_message)

    ws_direct_in = await best(direct_receive) - base
    ws_bridge_in = await best(bridge_receive) - base
    ws_direct_out = await best(direct_send) - base
    ws_bridge_out = await best(bridge_send) - base
    rows += [
        ("websocket message in: `await transport.receive()`, as an RSGI app does", ws_direct_in),
        (
            "  through the bridge: `WebsocketConnection.receive()` → `_message()` (our future, "
            "`_pending`'s done-callback → `_settle`, the message dict)",
            ws_bridge_in,
        ),
        ("websocket message out: `await transport.send_str(text)`", ws_direct_out),
        ("  through the bridge: `WebsocketConnection.send()` → `_transport_send()`", ws_bridge_out),
    ]
    # Not the bridge: what Django's ASGIHandler does per request on every path, for scale.
    from asgiref.sync import ThreadSensitiveContext, sync_to_async

    def noop() -> None:
        return None

    async def per_request_thread() -> None:
        async with ThreadSensitiveContext():  # ASGIHandler.__call__
            await sync_to_async(noop)()  # e.g. handle()'s sync_to_async(response.close)

    async def reused_thread() -> None:
        await sync_to_async(noop)()

    async def best_process(step: Callable[[], Awaitable[object]]) -> float:
        runs = []
        for _ in range(5):
            began = time.process_time()  # all threads: the hop's other side too
            for _ in range(max(1, n // 10)):
                await step()
            runs.append((time.process_time() - began) / max(1, n // 10) * 1e6)
        return min(runs)

    rows += [
        (
            "Django, not the bridge (all threads' CPU): `async with ThreadSensitiveContext()` "
            "+ one `sync_to_async` call, as ASGIHandler does per request (a new thread each "
            "time)",
            await best_process(per_request_thread),
        ),
        ("  one `sync_to_async` call on a reused thread", await best_process(reused_thread)),
    ]
    lines = [
        f"### The RSGI bridge's steps, each alone (CPU µs per call, best of 5 x {n}; the "
        "fake Granian futures are asyncio futures)",
        "",
        "| step | µs |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {value:.2f} |" for name, value in rows]
    return [*lines, ""]


async def profile(
    driver: Driver, workload: Workload, count: int, echoes: int, top: int
) -> list[str]:
    """cProfile of ``count`` requests, by this thread's CPU time (Django's thread hops show
    as the waits' CPU only): the functions with the most own time, and all of
    django_graceful's, in µs per unit (inflated by the profiler, comparable between
    profiles)."""
    import cProfile
    import pstats

    # This thread's CPU: no waits. From Python 3.12 cProfile sees every thread's calls
    # (sys.monitoring), and one thread's clock read in another gives nonsense: there the
    # process's CPU (the threads' work lands in the functions running meanwhile).
    clock = time.thread_time if sys.version_info < (3, 12) else time.process_time
    profiler = cProfile.Profile(clock)
    units = 0
    profiler.enable()
    for _ in range(count):
        units += await drive_once(driver, workload, echoes)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, function), data in stats.stats.items():  # type: ignore[attr-defined]
        _, calls, own, total, _ = data
        rows.append((own, total, calls, filename, line, function))
    rows.sort(reverse=True)
    whole = sum(r[0] for r in rows)
    out = [
        f"#### cProfile ({clock.__name__}), {workload.key}, {driver.name}: "
        f"{whole / units * 1e6:.0f} µs per {workload.unit} under the profiler; top {top} by "
        f"own time (µs per {workload.unit})",
        "",
        "| own | cumulative | calls | function |",
        "|---:|---:|---:|---|",
    ]
    for own, total, calls, filename, line, function in rows[:top]:
        where = filename
        for marker in ("site-packages/", str(ROOT) + "/"):
            if marker in where:
                where = where.split(marker, 1)[1]
        out.append(
            f"| {own / units * 1e6:.1f} | {total / units * 1e6:.1f} | {calls / units:.1f} | "
            f"`{where}:{line}({function})` |"
        )
    graceful = [r for r in rows if "django_graceful" in r[3]]
    if graceful:
        own = sum(r[0] for r in graceful)
        out += [
            "",
            f"django_graceful's functions ({own / units * 1e6:.1f} µs own time per "
            f"{workload.unit} in all):",
            "",
            "| own | cumulative | calls | function |",
            "|---:|---:|---:|---|",
        ]
        for own, total, calls, filename, line, function in graceful:
            if own / units * 1e6 < 0.5:
                break
            where = filename.split("django_graceful/", 1)[1]
            out.append(
                f"| {own / units * 1e6:.1f} | {total / units * 1e6:.1f} | "
                f"{calls / units:.1f} | `{where}:{line}({function})` |"
            )
    return [*out, ""]


# -- main ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Variants: "
        + "; ".join(v.name for v in ALL_VARIANTS)
        + ". Workloads: "
        + "; ".join(f"{w.key}: {w.name}" for w in WORKLOADS)
        + ".",
    )
    parser.add_argument(
        "--rounds", type=int, default=6, help="interleaved rounds (default 6; at least 2 run)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=2.5,
        help="seconds of load per variant per round (default 2.5)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=16,
        help="concurrent keep-alive connections (or websockets) of the client (default 16)",
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=[w.key for w in WORKLOADS],
        default=[w.key for w in WORKLOADS],
        help="which workloads (default: all)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=[v.key for v in ALL_VARIANTS],
        default=list(DEFAULT_VARIANTS),
        help="which variants (default: a b c d, those of them that can run here; (a) always "
        "runs; e f: an app with no framework on each interface, what Granian's interfaces "
        "cost by themselves)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of load per server and workload before round 1 (default 1)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=200.0,
        help="seconds after which no new round starts (default 200)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="instead of the servers: each path in this process (ASGI in memory, RSGI over "
        "a fake protocol; 8 x --rounds batches), CPU per request, the bridge's steps each "
        "alone, and a cProfile of (a), (b) and (c): where the time goes",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=400,
        help="--in-process: JSON requests per 8 batches (a quarter as many streams; one "
        "websocket of an eighth as many echoes per batch) (default 400)",
    )
    parser.add_argument(
        "--profile-top", type=int, default=25, help="--in-process: functions per profile"
    )
    args = parser.parse_args(argv)
    if args.in_process:
        return main_in_process(args)
    if args.rounds < 1 or args.duration <= 0 or not 1 <= args.connections <= 1000:
        parser.error("--rounds >= 1, --duration > 0, --connections 1-1000")
    began = begin()
    VARIANTS.update(APPS)

    skipped: list[str] = []
    chosen = [v for v in ALL_VARIANTS if v.key in args.variants or v.key == BASELINE]
    missing = django_rsgi_missing()
    if missing and any(v.key == "d" for v in chosen):
        skipped.append(f"(d) django-rsgi skipped: {missing}")
        chosen = [v for v in chosen if v.key != "d"]
    workloads = [w for w in WORKLOADS if w.key in args.workloads]
    if any(w.websocket for w in workloads) and any(v.ws_app is None for v in chosen):
        skipped.append("(d) django-rsgi has no websockets: not in the ws table")

    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    servers: dict[tuple[str, bool], Server] = {}
    for variant in chosen:
        for websocket in sorted({w.websocket for w in workloads}):
            app = variant.ws_app if websocket else variant.http_app
            if app is None:
                continue
            kind = "ws" if websocket else "http"
            servers[variant.key, websocket] = Server(
                variant.server,
                app,
                log_path=RESULTS / f"rsgi-{tag}-{variant.key}-{kind}.log",
            )
    cells: dict[str, dict[str, Cell]] = {w.key: {} for w in workloads}
    header = (
        f"{versions('django', 'granian')} (1 worker, {granian_loop()} loop, Granian's "
        "defaults), "
        f"django-rsgi {version('django-rsgi') if not missing else 'not run'}, Channels "
        f"{version('channels')}, asgiref {version('asgiref')}; django_graceful at "
        f"{source_state()}; {os.cpu_count()} CPUs"
    )
    log(header)
    for line in skipped:
        log(line)
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_listening(60)
        log(f"{len(servers)} servers listening after {time.monotonic() - began:.0f} s; warm-up")
        for workload in workloads:
            for variant in chosen:
                server = servers.get((variant.key, workload.websocket))
                if server is None:
                    continue
                warm = measure(server, workload, args.connections, args.warmup)
                if warm.rps == 0:
                    raise ServerError(
                        f"{variant.name} answered no {workload.key} request:\n{server.tail()}"
                    )
        for round_no in range(args.rounds):
            if round_no >= 2 and time.monotonic() - began > args.budget:
                log(f"time budget ({args.budget:g} s) reached after {round_no} rounds")
                break
            for workload in workloads:
                keys = [v.key for v in chosen if (v.key, workload.websocket) in servers]
                done = []
                for key in order(round_no, keys):
                    sample = measure(
                        servers[key, workload.websocket],
                        workload,
                        args.connections,
                        args.duration,
                    )
                    cell = cells[workload.key].setdefault(key, Cell())
                    cell.samples.append(sample)
                    cell.errors += sample.errors
                    cell.late_closes += sample.late_closes
                    cell.websockets += args.connections if workload.websocket else 0
                    done.append(f"{key} {sample.rps:.0f}/s {sample.cpu_us or 0:.0f} µs")
                log(f"round {round_no + 1} {workload.key}: " + ", ".join(done))
    finally:
        for server in servers.values():
            server.stop(5)

    out = [
        f"## Django on Granian: RSGI through django_graceful against plain Django on ASGI ({tag})",
        "",
        header + ".",
        f"Load: this process, {args.connections} keep-alive connections (websockets), "
        f"{args.duration:g} s per variant per round, rounds round-robin; cells: median "
        "(min .. max) of the rounds; ratios: median (min .. max) of each round's ratio to "
        "(a). For req/s a ratio > 1 is faster; for CPU per request a ratio < 1 is cheaper.",
        *(f"{line}." for line in skipped),
        "",
    ]
    for workload in workloads:
        out += table(workload, cells[workload.key], chosen)
    text = "\n".join(out)
    keys = "".join(v.key for v in chosen)
    default = keys == "".join(v.key for v in ALL_VARIANTS if v.key in DEFAULT_VARIANTS) or (
        missing and keys == "abc"
    )
    suffix = (
        ""
        if default and len(workloads) == len(WORKLOADS)
        else f"-{keys}-" + "-".join(w.key for w in workloads)
    )
    publish(f"rsgi-{tag}{suffix}.md", text, began)
    errors = sum(c.errors for w in cells.values() for c in w.values())
    return 1 if errors else 0


def main_in_process(args: argparse.Namespace) -> int:
    if args.rounds < 1 or args.iterations < 4:
        raise SystemExit("--rounds >= 1, --iterations >= 4")
    missing = django_rsgi_missing()
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    header = (
        f"{versions('django', 'channels')}, django-rsgi "
        f"{version('django-rsgi') if not missing else 'not run'}"
        f"; django_graceful at {source_state()}"
    )
    log(header)
    lines = asyncio.run(in_process(args, with_django_rsgi=missing is None))
    publish(
        f"rsgi-inprocess-{tag}.md",
        "\n".join([f"## In process ({tag})", "", header + ".", "", *lines]),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
