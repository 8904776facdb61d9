"""What GracefulASGI (+ GracefulMiddleware) costs per request, next to plain Django, in one run.

Two measurements, each interleaving the variants round by round (ABBA) so that drift
and the neighbours' load hit both alike, each reporting medians and their ratio:

(a) in-process: both ASGI apps in this process, driven directly with a minimal
    in-memory receive/send, many sequential requests per round: wall and CPU
    microseconds per request;
(b) under Uvicorn: one server process per variant, both up at once, loaded in turn by
    ``wrk`` (if on PATH) or a keep-alive asyncio raw-socket client: requests per
    second, and the server process's CPU time per request.

Overhead is extra cost per request: ``graceful_us / plain_us - 1``, and
``plain_rps / graceful_rps - 1`` for throughput. CPU time per request is the steadier
number on a shared machine (other processes' load stretches wall time, not CPU time).
The bench project has no middleware besides GracefulMiddleware and a hello-world view,
so the ratios are worst cases.

Run: ``.venvs/py311/bin/python bench/overhead.py`` (about a minute; see ``--help``:
``--rounds/--iterations`` in-process, ``--server-rounds/--duration`` under Uvicorn,
``--client wrk|python``, ``--budget`` seconds after which no new round starts).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import re
import shutil
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
    Server,
    ServerError,
    arguments,
    begin,
    log,
    machine,
    publish,
    version,
    versions,
)
from django_graceful._diagnosis.drill import group_members  # noqa: E402

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]

PLAIN, GRACEFUL = "plain", "graceful"
NAMES = {PLAIN: "plain Django", GRACEFUL: "GracefulASGI"}
HELLO_PATH = "/hello/"
HELLO = b"Hello, world!\n"
GRACEFUL_MIDDLEWARE = "django_graceful.middleware.GracefulMiddleware"

SCOPE: Message = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": HELLO_PATH,
    "raw_path": HELLO_PATH.encode(),
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench")],
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
}
REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


def pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f} %"


def floor(args: argparse.Namespace) -> str:
    return "NOISE FLOOR, plain Django in both slots: " if args.noise_floor else ""


def order(round_no: int) -> tuple[str, str]:
    """ABBA: alternate which variant goes first, so neither always follows the other."""
    return (PLAIN, GRACEFUL) if round_no % 2 == 0 else (GRACEFUL, PLAIN)


@dataclass
class Metric:
    """One quantity measured for both variants, round by round (rounds are interleaved)."""

    label: str
    higher_is_worse: bool  # True for time or CPU per request, False for requests/s
    digits: int = 1
    values: dict[str, list[float]] = field(default_factory=lambda: {PLAIN: [], GRACEFUL: []})

    def add(self, variant: str, value: float) -> None:
        self.values.setdefault(variant, []).append(value)

    def rounds(self) -> int:
        return min(len(v) for v in self.values.values())

    def median(self, variant: str) -> float:
        return statistics.median(self.values[variant])

    def cost_ratio(self, plain: float, graceful: float) -> float:
        """Time per request with GracefulASGI over time per request without."""
        return graceful / plain if self.higher_is_worse else plain / graceful

    def overhead(self) -> float:
        return self.cost_ratio(self.median(PLAIN), self.median(GRACEFUL))

    def paired(self) -> list[float]:
        """The cost ratio of each round (its two halves ran back to back)."""
        pairs = zip(self.values[PLAIN], self.values[GRACEFUL], strict=False)
        return [self.cost_ratio(p, g) for p, g in pairs if p > 0 and g > 0]

    def cell(self, variant: str) -> str:
        values, d = self.values[variant], self.digits
        return f"{self.median(variant):.{d}f} ({min(values):.{d}f} .. {max(values):.{d}f})"

    def last(self, variant: str) -> str:
        return f"{self.values[variant][-1]:.{self.digits}f}"


def report(
    title: str,
    metrics: list[Metric],
    goal: float | None,
    variants: tuple[tuple[str, str], ...] = ((PLAIN, NAMES[PLAIN]), (GRACEFUL, NAMES[GRACEFUL])),
    subject: str = "GracefulASGI overhead",
) -> list[str]:
    """A table (median, min .. max of the rounds) and one overhead line per metric.

    ``variants`` are the (key, name) of the baseline and the tested variant, in that order.
    """
    lines = [title, "", "| variant | " + " | ".join(m.label for m in metrics) + " |"]
    lines.append("|---|" + "---:|" * len(metrics))
    for key, name in variants:
        lines.append(f"| {name} | " + " | ".join(m.cell(key) for m in metrics) + " |")
    lines.append("")
    for metric in metrics:
        paired = metric.paired()
        line = f"{subject} ({metric.label}): {pct(metric.overhead())}"
        if goal is not None:
            verdict = "met" if (metric.overhead() - 1) * 100 <= goal else "NOT met"
            line += f" (goal <= {goal:g} %: {verdict})"
        if paired:
            line += (
                f"; per round: median {pct(statistics.median(paired))}, "
                f"range {pct(min(paired))} .. {pct(max(paired))}"
            )
        lines.append(line)
    return lines


# -- (a) in-process ------------------------------------------------------------------


class Exchange:
    """One request's receive/send in memory: the request once, then wait to be cancelled
    (Django's disconnect listener, cancelled when the response is done)."""

    __slots__ = ("body", "loop", "requested", "status")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.requested = False
        self.status = 0
        self.body = b""

    async def receive(self) -> Message:
        if not self.requested:
            self.requested = True
            return REQUEST
        await self.loop.create_future()  # resolved never: cancelled by the app
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")


async def drive(app: ASGIApp, count: int, path: str = HELLO_PATH) -> tuple[float, float]:
    """``count`` sequential requests for ``path``: (wall seconds, CPU seconds of this
    process, all threads).

    Raises on any wrong answer.
    """
    loop = asyncio.get_running_loop()
    scope = {**SCOPE, "path": path, "raw_path": path.encode()}
    wrong = 0
    cpu = time.process_time()
    wall = time.perf_counter()
    for _ in range(count):
        exchange = Exchange(loop)
        await app(dict(scope), exchange.receive, exchange.send)
        if exchange.status != 200 or exchange.body != HELLO:
            wrong += 1
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    if wrong:
        raise RuntimeError(f"{wrong} of {count} in-process requests for {path} went wrong")
    return wall, cpu


async def in_process_rounds(
    apps: dict[str, ASGIApp],
    paths: dict[str, str],
    args: argparse.Namespace,
    deadline: float,
    names: tuple[str, str] = ("plain", "graceful"),
) -> tuple[Metric, Metric]:
    """``--warmup`` requests to each app, then ``--rounds`` rounds of ``--iterations``
    requests each, the two apps (keys :data:`PLAIN` and :data:`GRACEFUL`, ``paths`` by
    key) interleaved (ABBA), no new one after ``deadline`` past the second: wall and CPU
    µs per request (``names``: the two in the progress lines)."""
    wall = Metric("wall µs/request", higher_is_worse=True)
    cpu = Metric("CPU µs/request", higher_is_worse=True)
    round_timeout = max(10.0, args.iterations * 0.02)
    for key in (PLAIN, GRACEFUL):
        await asyncio.wait_for(drive(apps[key], args.warmup, paths[key]), round_timeout)
    for round_no in range(args.rounds):
        if round_no >= 2 and time.monotonic() > deadline:
            log(f"  time budget reached after {round_no} rounds")
            break
        for key in order(round_no):
            gc.collect()
            seconds, cpu_seconds = await asyncio.wait_for(
                drive(apps[key], args.iterations, paths[key]), round_timeout
            )
            wall.add(key, seconds / args.iterations * 1e6)
            cpu.add(key, cpu_seconds / args.iterations * 1e6)
        log(
            f"  round {round_no + 1}: {names[0]} {wall.last(PLAIN)} µs ({cpu.last(PLAIN)} CPU), "
            f"{names[1]} {wall.last(GRACEFUL)} µs ({cpu.last(GRACEFUL)} CPU)"
        )
    return wall, cpu


async def lifespan_startup(app: ASGIApp, timeout: float) -> Callable[[], Awaitable[None]]:
    """Send ``lifespan.startup`` the way a server does; returns the (bounded) shutdown."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    answer = await asyncio.wait_for(outbox.get(), timeout)
    if answer["type"] != "lifespan.startup.complete":
        task.cancel()
        raise RuntimeError(f"lifespan startup failed: {answer}")

    async def shutdown() -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(outbox.get(), timeout)
            await asyncio.wait_for(task, timeout)
        except TimeoutError:
            log(f"  (lifespan shutdown did not finish within {timeout:g} s)")
            task.cancel()

    return shutdown


def build_apps(
    noise_floor: bool, settings_module: str = "bench.project.settings"
) -> dict[str, ASGIApp]:
    """Both apps in this process: plain Django without GracefulMiddleware, and ours with it
    (with ``noise_floor``, a second plain Django instead of ours), on ``settings_module``
    (one with GracefulMiddleware)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    import django

    django.setup(set_prefix=False)
    from django.conf import settings
    from django.core.asgi import get_asgi_application as plain_application
    from django.test.utils import override_settings

    import django_graceful.asgi

    without = [m for m in settings.MIDDLEWARE if m != GRACEFUL_MIDDLEWARE]
    with override_settings(MIDDLEWARE=without):
        plain = plain_application()
        second = plain_application() if noise_floor else None
    graceful = second or django_graceful.asgi.get_asgi_application()
    logging.getLogger("django_graceful").setLevel(logging.WARNING)  # after setup's dictConfig
    return {PLAIN: plain, GRACEFUL: graceful}


async def in_process(args: argparse.Namespace, deadline: float) -> list[str]:
    apps = build_apps(args.noise_floor)
    shutdown = None if args.noise_floor else await lifespan_startup(apps[GRACEFUL], timeout=10)
    try:
        wall, cpu = await in_process_rounds(apps, dict.fromkeys(apps, HELLO_PATH), args, deadline)
    finally:
        if shutdown is not None:
            await shutdown()
    title = (
        f"(a) {floor(args)}in-process: {wall.rounds()} interleaved rounds x {args.iterations} "
        "sequential requests per variant, minimal in-memory receive/send; "
        "median (min .. max) of the rounds"
    )
    lines = report(title, [wall, cpu], goal=None)
    extra = wall.median(GRACEFUL) - wall.median(PLAIN)
    return [*lines, f"(GracefulASGI adds {extra:+.1f} µs wall per request in-process)"]


# -- (b) under Uvicorn ---------------------------------------------------------------


@dataclass
class Load:
    rps: float
    requests: int  # completed answers (what the server's CPU time is divided by)
    errors: int  # socket errors, timeouts, non-2xx


#: ``load(port, path, connections, seconds)``: one round of load on one server.
LoadFn = Callable[[int, str, int, int], Load]


def wrk_load(port: int, path: str, connections: int, duration: int) -> Load:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s"]
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
    return Load(float(rps.group(1)), int(total.group(1)), errors)


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
    latencies: list[float] | None = None,
    expect: int | None = None,
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
                if latencies is not None:
                    latencies.append(time.perf_counter() - began)
            else:
                counts.errors += 1
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        counts.errors += 1
    finally:
        writer.close()


async def _python_load(
    port: int,
    path: str,
    connections: int,
    duration: float,
    latencies: list[float] | None = None,
    expect: int | None = None,
) -> Load:
    """``connections`` keep-alive connections loading ``path`` for ``duration`` s (see
    ``_keep_alive`` for ``latencies`` and ``expect``)."""
    counts = _Counts()
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
    return Load(counts.ok / duration, counts.done, counts.errors)


def python_load(port: int, path: str, connections: int, duration: int) -> Load:
    return asyncio.run(_python_load(port, path, connections, duration))


def load_client(args: argparse.Namespace) -> tuple[LoadFn, str]:
    """The client that loads the servers: ``wrk`` (``--client wrk``, or ``auto`` and wrk
    on PATH) or the asyncio one; and how the table names it."""
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    if not use_wrk:
        tool = f"asyncio raw-socket keep-alive HTTP/1.1 client, {args.connections} connections"
        return python_load, tool
    if not shutil.which("wrk"):
        raise SystemExit("--client wrk: wrk is not on PATH")
    banner = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (banner.stdout or banner.stderr).splitlines()
    return wrk_load, f"{first[0].split(' [')[0] if first else 'wrk'} -t1 -c{args.connections}"


def server_rounds(
    servers: dict[str, Server],
    paths: dict[str, str],
    load: LoadFn,
    args: argparse.Namespace,
    deadline: float,
    names: tuple[str, str] = ("plain", "graceful"),
) -> tuple[Metric, Metric, dict[str, int]]:
    """``--server-rounds`` rounds of ``--duration`` s of load on each of the two servers
    (keys :data:`PLAIN` and :data:`GRACEFUL`, ``paths`` by key), interleaved (ABBA), no new
    one after ``deadline`` past the second: requests/s, the server's CPU µs per request,
    and the errors of each (``names``: the two in the progress lines)."""
    rps = Metric("requests/s", higher_is_worse=False, digits=0)
    cpu = Metric("server CPU µs/request", higher_is_worse=True)
    errors = dict.fromkeys(servers, 0)
    for round_no in range(args.server_rounds):
        if round_no >= 2 and time.monotonic() > deadline:
            log(f"  time budget reached after {round_no} rounds")
            break
        for key in order(round_no):
            proc = servers[key].proc
            assert proc is not None
            before = cpu_seconds(proc.pid)
            result = load(servers[key].port, paths[key], args.connections, args.duration)
            after = cpu_seconds(proc.pid)
            rps.add(key, result.rps)
            if before is not None and after is not None and result.requests:
                cpu.add(key, (after - before) / result.requests * 1e6)
            errors[key] += result.errors
        log(
            f"  round {round_no + 1}: {names[0]} {rps.last(PLAIN)} req/s, "
            f"{names[1]} {rps.last(GRACEFUL)} req/s"
        )
    return rps, cpu, errors


def uvicorn_flavour() -> str:
    http = "httptools" if find_spec("httptools") else "h11"
    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    return f"Uvicorn {version('uvicorn')} (1 worker, {http}, {loop} loop, --no-access-log)"


def cpu_seconds(pid: int) -> float | None:
    """user + system CPU seconds of a process (Linux /proc); None where unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """user + system CPU seconds of the processes of group ``pgid`` alive now (a server
    and its workers: Granian runs its app in a worker process)."""
    return sum(cpu_seconds(pid) or 0.0 for pid in group_members(pgid))


def under_uvicorn(args: argparse.Namespace, deadline: float) -> list[str]:
    load, tool = load_client(args)
    log(f"(b) load tool: {tool}")
    flags = ("--no-access-log", "--log-level", "warning")
    servers = {
        variant: Server(
            "uvicorn",
            PLAIN if args.noise_floor else variant,
            log_path=RESULTS / f"overhead-uvicorn-{variant}.log",
            extra=flags,
        )
        for variant in (PLAIN, GRACEFUL)
    }
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_listening(30)
        for variant, server in servers.items():
            warm = load(server.port, HELLO_PATH, args.connections, 1)
            if warm.requests == 0:
                raise ServerError(f"{variant} answered no request:\n{server.tail()}")
        paths = dict.fromkeys(servers, HELLO_PATH)
        rps, cpu, errors = server_rounds(servers, paths, load, args, deadline)
    finally:
        for server in servers.values():
            server.stop(10)
    title = (
        f"(b) {floor(args)}{uvicorn_flavour()}: {rps.rounds()} interleaved rounds x "
        f"{args.duration} s per variant; load: {tool}; median (min .. max) of the rounds"
    )
    metrics = [rps, cpu] if cpu.rounds() else [rps]
    lines = report(title, metrics, goal=args.goal)
    lines.append(f"(errors: plain {errors[PLAIN]}, GracefulASGI {errors[GRACEFUL]})")
    return lines


def round_arguments(
    doc: str | None,
    *,
    iterations: int,
    rounds: int,
    server_rounds: int,
    duration: int,
    budget: float,
) -> argparse.ArgumentParser:
    """The options of a measurement in rounds, (a) in-process and (b) under Uvicorn, with
    this benchmark's defaults (bench/cancel.py measures (a) and (b) too)."""
    parser = arguments(doc)
    parser.add_argument(
        "--iterations", type=int, default=iterations, help="in-process requests/round"
    )
    parser.add_argument("--warmup", type=int, default=300, help="in-process warm-up requests")
    parser.add_argument("--rounds", type=int, default=rounds, help="in-process rounds")
    parser.add_argument(
        "--server-rounds", type=int, default=server_rounds, help="rounds under Uvicorn"
    )
    parser.add_argument("--duration", type=int, default=duration, help="seconds of load per round")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--goal", type=float, default=3.0, help="overhead goal, percent")
    parser.add_argument("--budget", type=float, default=budget, help="seconds; no new rounds after")
    parser.add_argument("--skip-in-process", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = round_arguments(
        __doc__, iterations=500, rounds=10, server_rounds=6, duration=3, budget=100.0
    )
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument(
        "--noise-floor",
        action="store_true",
        help="plain Django in both slots: the 'overhead' shown is the measurement's noise",
    )
    args = parser.parse_args(argv)
    if min(args.iterations, args.rounds, args.server_rounds, args.duration, args.connections) < 1:
        parser.error("counts and durations must be >= 1")
    began = begin()
    # Both measurements get a share of the budget; each runs at least two rounds.
    share = args.budget * (0.4 if not args.skip_server else 1.0)
    log(f"{versions('django', 'asgiref')}, {machine()}")
    out: list[str] = []
    if not args.skip_in_process:
        log("(a) in-process ...")
        out += [*asyncio.run(in_process(args, began + share)), ""]
    if not args.skip_server:
        log("(b) under Uvicorn ...")
        out += [*under_uvicorn(args, began + args.budget), ""]
    name = "overhead-noise-floor.md" if args.noise_floor else "overhead.md"
    publish(name, "\n".join(out), began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
