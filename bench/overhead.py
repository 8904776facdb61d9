"""What GracefulASGI (+ GracefulMiddleware) costs per request in process, next to plain Django.

Both ASGI apps in this process, driven directly with a minimal in-memory receive/send,
many sequential requests per round, the rounds interleaving the two (ABBA) so that drift
and the neighbours' load hit both alike: wall and CPU microseconds per request, medians
and their ratio. No server, no thread per request's start: the Python of the path alone.
What a request costs on the servers (CPU of the process tree, requests/s, p99, on every
server, with and without reused threads) is bench/request_cost.py's.

Overhead is extra cost per request: ``graceful_us / plain_us - 1``. The bench project
has no middleware besides GracefulMiddleware and a hello-world view, so the ratios are
worst cases. bench/cancel.py and bench/rsgi.py build on this file's in-process driver.

Run: ``.venvs/py311/bin/python bench/overhead.py`` (under a minute; ``--help``:
``--rounds``, ``--iterations``, ``--warmup``, ``--budget`` seconds after which no new
round starts, ``--noise-floor``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
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

from bench.harness import arguments, begin, log, machine, publish, versions  # noqa: E402

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
        f"{floor(args)}In process: {wall.rounds()} interleaved rounds x {args.iterations} "
        "sequential requests per variant, minimal in-memory receive/send; "
        "median (min .. max) of the rounds"
    )
    lines = report(title, [wall, cpu], goal=None)
    extra = wall.median(GRACEFUL) - wall.median(PLAIN)
    return [*lines, f"(GracefulASGI adds {extra:+.1f} µs wall per request in-process)"]


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--iterations", type=int, default=500, help="requests per round")
    parser.add_argument("--warmup", type=int, default=300, help="warm-up requests")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds; no new rounds after")
    parser.add_argument(
        "--noise-floor",
        action="store_true",
        help="plain Django in both slots: the 'overhead' shown is the measurement's noise",
    )
    args = parser.parse_args(argv)
    if min(args.iterations, args.rounds) < 1:
        parser.error("counts must be >= 1")
    began = begin()
    log(f"{versions('django', 'asgiref')}, {machine()}")
    log("in-process ...")
    out = asyncio.run(in_process(args, began + args.budget))
    name = "overhead-noise-floor.md" if args.noise_floor else "overhead.md"
    publish(name, "\n".join(out), began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
