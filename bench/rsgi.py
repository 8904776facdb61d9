"""Where the time goes on Granian's RSGI path, in process: GracefulASGI over a fake RSGI
protocol next to plain Django and GracefulASGI over ASGI in memory.

No server: each path is driven in this process (plain Django and GracefulASGI over ASGI in
memory, GracefulASGI and django-rsgi over a fake RSGI protocol whose futures are asyncio
futures), the event loop thread's CPU per request (per websocket echo) measured in many
short interleaved batches; then the RSGI bridge's steps timed one by one, and a cProfile of
each path: where the time goes, line by line, without a server's noise. What the servers
themselves make of it (Granian RSGI and ASGI against plain Django, CPU per request,
requests/s, p99) is bench/request_cost.py's.

Workloads: ``json`` (a small ``JsonResponse``), ``stream`` (a ``StreamingHttpResponse`` of
16 x 64 KiB) and ``ws`` (a Channels echo consumer: text messages echoed back to back).

Run: ``.venvs/py311/bin/python bench/rsgi.py`` and ``.venvs/py313/bin/python bench/rsgi.py``
(``--help``: ``--rounds``, ``--iterations``, ``--workloads``, ``--profile-top``). The tables
go to stdout and to ``bench/results/rsgi-inprocess-py3XX.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path: the repository instead (a
# file of bench/ would shadow a package: bench/websockets.py the ``websockets`` package).
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from bench.harness import (  # noqa: E402
    log,
    publish,
    quantile,
    rotation,
    source_state,
    version,
    versions,
)
from bench.project.views import JSON_BODY_SIZE, STREAM_SIZE  # noqa: E402
from bench.request_cost import django_rsgi_missing  # noqa: E402

WS_PATH = "/ws/"
WS_MESSAGE = b"hello, echo!"


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


WORKLOADS = (
    Workload("json", "small JSON (JsonResponse)", "/json/", JSON_BODY_SIZE),
    Workload("stream", "1 MiB streamed (16 x 64 KiB, chunked)", "/stream/", STREAM_SIZE),
    Workload("ws", "websocket echo (Channels consumer)", WS_PATH, None, websocket=True),
)


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
                for key in rotation(batch, list(by_key)):
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
    )
    parser.add_argument(
        "--rounds", type=int, default=6, help="8 x this many interleaved batches (default 6)"
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=400,
        help="JSON requests per 8 batches (a quarter as many streams; one websocket of an "
        "eighth as many echoes per batch) (default 400)",
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=[w.key for w in WORKLOADS],
        default=[w.key for w in WORKLOADS],
        help="which workloads (default: all)",
    )
    parser.add_argument("--profile-top", type=int, default=25, help="functions per profile")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.iterations < 4:
        parser.error("--rounds >= 1, --iterations >= 4")
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
