"""Shutdown with 1,000 open websockets on Uvicorn: when the last close frame arrives, and the exit.

Uvicorn (its usual command line) serves the bench project behind a Channels
``ProtocolTypeRouter``: an echo consumer in a group (in-memory layer). The benchmark
opens ``--count`` websockets from one asyncio client on 127.0.0.1 (each one echoes once,
so every consumer runs), sends SIGTERM to the server, and records for each websocket the
close code it received and when, and when the server's process exited.

Variants: ``graceful`` (GracefulASGI around the router, the consumer with
GracefulConsumerMixin, ``GRACE_PERIOD=2, CANCEL_TIMEOUT=1``: a budget of 3 s) and
``plain`` (the same router and consumer without django_graceful: Uvicorn's own stop).

Every wait is bounded (``--cap``); the server's process group is killed at the end.
Run: ``.venvs/py311/bin/python bench/websockets.py [--count 1000] [--runs 2]``
"""

from __future__ import annotations

import asyncio
import collections
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path: the repository instead (a
# file of bench/ would shadow a package: bench/websockets.py the ``websockets`` package).
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from bench.harness import (  # noqa: E402
    RESULTS,
    VARIANTS,
    Server,
    ServerError,
    arguments,
    begin,
    http_get,
    log,
    publish,
    version,
    versions,
)

#: variant -> (ASGI app, settings module); the budget is the one of bench.project.settings.
WS_VARIANTS = {
    "graceful": ("bench.project.asgi_ws:application", "bench.project.settings_ws"),
    "plain": ("bench.project.asgi_ws_plain:application", "bench.project.settings_ws_plain"),
}
LABELS = {"graceful": "django_graceful", "plain": "plain Channels"}
BUDGET = 2 + 1  # GRACE_PERIOD + CANCEL_TIMEOUT of bench.project.settings
#: Handshakes in flight at once while the websockets open.
OPENING = 100
#: File descriptors this process needs beyond one per websocket.
SPARE_FDS = 256


@dataclass
class Run:
    variant: str
    opened: int = 0
    codes: collections.Counter[int | None] = field(default_factory=collections.Counter)
    frames: list[float] = field(default_factory=list)  # close frame in, s after SIGTERM
    closes: list[float] = field(default_factory=list)  # connection closed, s after SIGTERM
    before_exit: int = 0
    exit_after: float | None = None
    exit_code: int | None = None
    open_seconds: float = 0.0
    error: str | None = None

    def frame_at(self, fraction: float) -> float | None:
        if not self.frames:
            return None
        ordered = sorted(self.frames)
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def raise_fd_limit(needed: int) -> None:
    """Raise RLIMIT_NOFILE (inherited by the server) to fit ``needed`` descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"need {needed} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class TimedConnection(ClientConnection):
    """Notes when the server's close frame arrived (the connection closes a round trip later)."""

    close_frame_at: float | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.close_frame_at is None and self.protocol.close_rcvd is not None:
            self.close_frame_at = time.monotonic()


async def open_one(url: str, gate: asyncio.Semaphore) -> TimedConnection:
    async with gate:
        ws = await connect(
            url,
            open_timeout=30,
            close_timeout=5,
            ping_interval=None,
            proxy=None,
            create_connection=TimedConnection,
        )
        assert isinstance(ws, TimedConnection)
        await ws.send("hi")
        reply = await asyncio.wait_for(ws.recv(), 10)
        if reply != "hi":
            raise RuntimeError(f"echo answered {reply!r}")
        return ws


async def read_until_closed(ws: TimedConnection) -> tuple[float | None, float, int | None]:
    """When the close frame arrived and the connection closed (monotonic), and the code."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        return ws.close_frame_at, time.monotonic(), code


async def wait_exit(server: Server, cap: float) -> float | None:
    """Poll (every 5 ms) for the server's exit; monotonic time of it, None past ``cap``."""
    assert server.proc is not None
    deadline = time.monotonic() + cap
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return time.monotonic()
        await asyncio.sleep(0.005)
    return None


async def measure(server: Server, count: int, cap: float, run: Run) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws/"
    gate = asyncio.Semaphore(OPENING)
    began = time.monotonic()
    opening = [asyncio.ensure_future(open_one(url, gate)) for _ in range(count)]
    done, pending = await asyncio.wait(opening, timeout=cap)
    for task in pending:
        task.cancel()
    clients = [t.result() for t in done if not t.cancelled() and t.exception() is None]
    run.opened = len(clients)
    run.open_seconds = time.monotonic() - began
    if run.opened < count:
        failed = [t.exception() for t in done if not t.cancelled() and t.exception()]
        run.error = f"opened {run.opened} of {count}: {failed[:1] or 'timeout'}"
        for ws in clients:
            await ws.close()
        return
    readers = [asyncio.ensure_future(read_until_closed(ws)) for ws in clients]
    await asyncio.sleep(0.5)  # let the server settle: every consumer is in receive()
    server.terminate()
    signalled = server.signalled_at
    assert signalled is not None
    exited_task = asyncio.ensure_future(wait_exit(server, cap))
    done, pending = await asyncio.wait(readers, timeout=cap)
    for task in pending:
        task.cancel()
    exited = await exited_task
    for task in done:
        frame_at, closed_at, code = task.result()
        run.codes[code] += 1
        run.closes.append(closed_at - signalled)
        if frame_at is not None:
            run.frames.append(frame_at - signalled)
            if exited is None or frame_at <= exited:
                run.before_exit += 1
    if pending:
        run.codes[None] += len(pending)
    if exited is not None:
        run.exit_after = exited - signalled
        assert server.proc is not None
        run.exit_code = server.proc.returncode
    for ws in clients:
        ws.transport.abort()


def run_once(variant: str, count: int, cap: float, index: int) -> Run:
    run = Run(variant)
    server = Server(
        "uvicorn",
        f"ws-{variant}",
        log_path=RESULTS / f"websockets-{variant}-{index}.log",
        extra=("--backlog", str(max(2048, count))),
    )
    try:
        server.start()
        server.wait_listening(30)
        warm = http_get(server.port, "/hello/", timeout=15)
        if warm.status != 200:
            raise ServerError(f"warm-up got {warm.describe()}:\n{server.tail()}")
        asyncio.run(measure(server, count, cap, run))
    except ServerError as exc:
        run.error = str(exc).splitlines()[0]
        print(str(exc), file=sys.stderr)
    finally:
        server.kill()
    return run


def fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def row(run: Run, count: int) -> str:
    if run.error:
        return f"| {LABELS[run.variant]} | error: {run.error} | | | | | | | |"
    got = ", ".join(
        f"{n}x {code if code is not None else 'no close frame'}"
        for code, n in sorted(run.codes.items(), key=lambda kv: -kv[1])
    )
    return (
        f"| {LABELS[run.variant]} | {got} | {run.before_exit}/{count} | "
        f"{fmt(run.frame_at(0))} | {fmt(run.frame_at(0.5))} | {fmt(run.frame_at(0.99))} | "
        f"{fmt(run.frame_at(1))} | {fmt(max(run.closes) if run.closes else None)} | "
        f"{fmt(run.exit_after)} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__, variants=WS_VARIANTS, default_variants=["graceful"])
    parser.add_argument("--count", type=int, default=1000, help="open websockets (1-5000)")
    parser.add_argument("--runs", type=int, default=2, help="fresh servers per variant (1-5)")
    parser.add_argument("--cap", type=float, default=30.0, help="longest wait for a step, s")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 5000 or not 1 <= args.runs <= 5 or not 5 <= args.cap <= 120:
        parser.error("--count 1-5000, --runs 1-5, --cap 5-120")
    raise_fd_limit(args.count * 2 + SPARE_FDS)  # the server inherits the limit
    for variant, app in WS_VARIANTS.items():
        VARIANTS[f"ws-{variant}"] = app
    began = begin()
    runs: list[Run] = []
    for variant in args.variants:
        for index in range(1, args.runs + 1):
            run = run_once(variant, args.count, args.cap, index)
            runs.append(run)
            log(f"{variant} #{index}: {row(run, args.count)}")
    header = (
        f"Shutdown of Uvicorn {version('uvicorn')} with {args.count} open websockets, SIGTERM "
        f"({versions('django', 'channels', 'websockets')}; {args.runs} fresh server(s) "
        f"per row group; times from the SIGTERM). django_graceful budget {BUDGET} s "
        "(GRACE_PERIOD 2 + CANCEL_TIMEOUT 1).\n\n"
        "| app | close codes received | close frames in before the exit | first close frame | "
        "median | 99th percentile | last close frame | last connection closed | exit |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    publish("websockets.md", "\n".join([header, *(row(run, args.count) for run in runs)]), began)
    ok = all(
        not r.error and r.codes.get(1012, 0) == args.count and r.before_exit == args.count
        for r in runs
        if r.variant == "graceful"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
