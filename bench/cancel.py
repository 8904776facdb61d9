"""What cancellation costs: @cancellable's overhead per request, and disconnect-to-cancel latency.

One run, three measurements, each interleaving its two variants (ABBA) so that drift and
the neighbours' load hit both alike:

(a) overhead in-process: two GracefulASGI apps in this process, one without
    GracefulMiddleware serving the plain async hello world (``/hello/``), one with
    GracefulMiddleware serving the same view under ``@cancellable``
    (``/hello/cancellable/``), driven with a minimal in-memory receive/send: wall and CPU
    microseconds per request;
(b) overhead under Uvicorn: the same two configurations, one server process each, both
    up at once, loaded in turn by ``wrk`` (if on PATH) or a keep-alive asyncio raw-socket
    client: requests/s and the server process's CPU microseconds per request;
(c) disconnect -> cancel latency under Uvicorn: a view that waits (``await
    asyncio.sleep(30)``); a raw-socket client sends the request, waits for the view's
    "started", lets it park ``--settle`` s, reads ``time.monotonic_ns()`` and closes the
    socket (FIN). The view reads ``time.monotonic_ns()`` in its ``except CancelledError``
    (and ``on_cancel`` its own) and sends it over UDP on 127.0.0.1 afterwards, so the
    transport adds nothing; ``CLOCK_MONOTONIC`` is one clock for the whole machine, so
    the two processes' readings compare. Plain Django (``django.core.asgi``, the view
    undecorated) against GracefulASGI + GracefulMiddleware + ``@cancellable(on_cancel=...)``.

Overhead is extra cost per request (``cancellable_us / baseline_us - 1``, and
``baseline_rps / cancellable_rps - 1``); added latency is the difference of the medians
(and the median of the per-pair differences). Goals: overhead <= 3 %, added latency
<= 1 ms. ``--noise-floor`` puts the baseline in both slots: the differences shown are then
the measurement's own noise.

Run: ``.venvs/py311/bin/python bench/cancel.py`` (about a minute; ``--help``). Server logs
and a copy of the tables go to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import math
import os
import socket
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path: the repository instead (a
# file of bench/ would shadow a package: bench/websockets.py the ``websockets`` package).
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from bench.harness import (  # noqa: E402
    RESULTS,
    LoadFn,
    Server,
    ServerError,
    arguments,
    begin,
    cpu_seconds,
    load_average,
    load_client,
    log,
    machine,
    publish,
    uvicorn_flavour,
    versions,
)
from bench.overhead import (  # noqa: E402
    GRACEFUL,
    GRACEFUL_MIDDLEWARE,
    PLAIN,
    ASGIApp,
    Metric,
    in_process_rounds,
    lifespan_startup,
    order,
    report,
)

#: Slots of each comparison: PLAIN is the baseline, GRACEFUL the variant under test.
BASE, TESTED = PLAIN, GRACEFUL

SETTINGS = "bench.project.settings_cancel"  # GracefulASGI + GracefulMiddleware
SETTINGS_BARE = "bench.project.settings_cancel_bare"  # GracefulASGI, no middleware
SETTINGS_PLAIN = "bench.project.settings_cancel_plain"  # plain Django

HELLO_PATH, HELLO_CANCELLABLE = "/hello/", "/hello/cancellable/"
WAIT_PATH, WAIT_CANCELLABLE = "/wait/", "/wait/cancellable/"
UVICORN_FLAGS = ("--no-access-log", "--log-level", "warning")

#: Events the latency views report: the view's ``except CancelledError``, and on_cancel.
IN_VIEW, ON_CANCEL = "cancelled", "on_cancel"
EVENT_NAMES = {IN_VIEW: "`except CancelledError` in the view", ON_CANCEL: "`on_cancel` ran"}


@dataclass(frozen=True)
class Slot:
    """One side of a comparison: its name in the tables, its settings, its path."""

    name: str
    settings: str
    path: str
    variant: str = "graceful"  # harness variant: which ASGI entrypoint the server runs


def overhead_slots(noise_floor: bool) -> dict[str, Slot]:
    base = Slot("GracefulASGI, plain view", SETTINGS_BARE, HELLO_PATH)
    if noise_floor:
        return {BASE: base, TESTED: replace(base, name=f"{base.name} (2nd server/app)")}
    tested = Slot("+ GracefulMiddleware + @cancellable", SETTINGS, HELLO_CANCELLABLE)
    return {BASE: base, TESTED: tested}


def latency_slots(noise_floor: bool) -> dict[str, Slot]:
    base = Slot("plain Django", SETTINGS_PLAIN, WAIT_PATH, variant="plain")
    if noise_floor:
        return {BASE: base, TESTED: replace(base, name=f"{base.name} (2nd server)")}
    tested = Slot("GracefulASGI + GracefulMiddleware + @cancellable", SETTINGS, WAIT_CANCELLABLE)
    return {BASE: base, TESTED: tested}


def floor(args: argparse.Namespace) -> str:
    return "NOISE FLOOR, the baseline in both slots: " if args.noise_floor else ""


def overhead_report(
    title: str, metrics: list[Metric], slots: dict[str, Slot], goal: float | None
) -> list[str]:
    """overhead.py's table, for the baseline and tested slots of this script."""
    variants = ((BASE, slots[BASE].name), (TESTED, slots[TESTED].name))
    return report(title, metrics, goal, variants, subject="overhead")


# -- (a) in-process ------------------------------------------------------------------


def build_apps(slots: dict[str, Slot]) -> dict[str, ASGIApp]:
    """One GracefulASGI per slot, with the middleware its settings name."""
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    import django

    django.setup(set_prefix=False)
    from django.test.utils import override_settings

    from bench.project import settings_cancel, settings_cancel_bare
    from django_graceful._serving.handler import GracefulASGIHandler
    from django_graceful.asgi import GracefulASGI

    middleware = {
        SETTINGS: settings_cancel.MIDDLEWARE,
        SETTINGS_BARE: settings_cancel_bare.MIDDLEWARE,
    }
    assert GRACEFUL_MIDDLEWARE in middleware[SETTINGS] and not middleware[SETTINGS_BARE]
    apps: dict[str, ASGIApp] = {}
    for key, slot in slots.items():
        with override_settings(MIDDLEWARE=middleware[slot.settings]):
            apps[key] = GracefulASGI(GracefulASGIHandler())  # middleware loads here
    logging.getLogger("django_graceful").setLevel(logging.WARNING)  # after setup's dictConfig
    return apps


async def in_process(args: argparse.Namespace, deadline: float) -> list[str]:
    slots = overhead_slots(args.noise_floor)
    apps = build_apps(slots)
    shutdown = await lifespan_startup(apps[BASE], timeout=10)  # one lifecycle for both
    try:
        paths = {key: slot.path for key, slot in slots.items()}
        names = ("baseline", "tested")
        wall, cpu = await in_process_rounds(apps, paths, args, deadline, names)
    finally:
        await shutdown()
    title = (
        f"(a) {floor(args)}overhead in-process: {wall.rounds()} interleaved rounds x "
        f"{args.iterations} sequential requests per variant, minimal in-memory receive/send; "
        "median (min .. max) of the rounds"
    )
    lines = overhead_report(title, [wall, cpu], slots, goal=args.goal)
    extra = wall.median(TESTED) - wall.median(BASE)
    extra_cpu = cpu.median(TESTED) - cpu.median(BASE)
    return [*lines, f"(adds {extra:+.1f} µs wall, {extra_cpu:+.1f} µs CPU per request)"]


# -- (b) overhead under Uvicorn ------------------------------------------------------


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


def start_servers(
    slots: dict[str, Slot], tag: str, env: dict[str, str] | None = None
) -> dict[str, Server]:
    servers = {
        key: Server(
            "uvicorn",
            slot.variant,
            log_path=RESULTS / f"cancel-{tag}-{'base' if key == BASE else 'tested'}.log",
            extra=UVICORN_FLAGS,
            env={"DJANGO_SETTINGS_MODULE": slot.settings, **(env or {})},
        )
        for key, slot in slots.items()
    }
    for server in servers.values():
        server.start()
    for server in servers.values():
        server.wait_listening(30)
    return servers


def under_uvicorn(args: argparse.Namespace, deadline: float) -> list[str]:
    slots = overhead_slots(args.noise_floor)
    load, tool = load_client(args.client, args.connections)
    log(f"(b) load tool: {tool}")
    servers: dict[str, Server] = {}
    try:
        servers = start_servers(slots, "overhead")
        for key, server in servers.items():
            warm = load(server.port, slots[key].path, args.connections, 1)
            if warm.requests == 0 or warm.errors:
                raise ServerError(f"{slots[key].name}: warm-up failed ({warm}):\n{server.tail()}")
        paths = {key: slot.path for key, slot in slots.items()}
        names = ("baseline", "tested")
        rps, cpu, errors = server_rounds(servers, paths, load, args, deadline, names)
    finally:
        for server in servers.values():
            server.stop(10)
    title = (
        f"(b) {floor(args)}overhead under {uvicorn_flavour()}: {rps.rounds()} interleaved "
        f"rounds x {args.duration} s per variant; load: {tool}; median (min .. max) of the rounds"
    )
    metrics = [rps, cpu] if cpu.rounds() else [rps]
    lines = overhead_report(title, metrics, slots, goal=args.goal)
    lines.append(f"(errors: baseline {errors[BASE]}, tested {errors[TESTED]})")
    return lines


# -- (c) disconnect -> cancel latency under Uvicorn ----------------------------------


class Probe:
    """The UDP socket on 127.0.0.1 that the latency views report to."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def drain(self) -> None:
        """Drop datagrams of earlier iterations (bounded: the buffer is finite)."""
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            for _ in range(10_000):
                self.sock.recv(512)
        self.sock.setblocking(True)

    def wait(self, n: int, wanted: set[str], timeout: float) -> dict[str, tuple[int, str]]:
        """Events of request ``n`` (name -> (monotonic ns, detail)) until all came or timeout."""
        got: dict[str, tuple[int, str]] = {}
        deadline = time.monotonic() + timeout
        while not wanted <= got.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(512)
            except TimeoutError:
                break
            event, number, stamp, detail = data.decode().split(" ", 3)
            if number == str(n):
                got[event] = (int(stamp), detail)
        return got

    def close(self) -> None:
        self.sock.close()


@dataclass
class Latencies:
    """Close-to-event latencies in µs, per slot and event, iteration by iteration."""

    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    missed: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, key: str, event: str, micros: float) -> None:
        self.values.setdefault((key, event), []).append(micros)

    def get(self, key: str, event: str) -> list[float]:
        return self.values.get((key, event), [])


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def disconnect_once(
    port: int, path: str, n: int, probe: Probe, wanted: set[str], args: argparse.Namespace
) -> tuple[dict[str, float], str | None, str | None]:
    """One request, closed once the view waits: (event -> µs after the close, reason, error)."""
    probe.drain()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path}?n={n} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        if "started" not in probe.wait(n, {"started"}, timeout=5):
            return {}, None, "the view did not start within 5 s"
        time.sleep(args.settle)  # the view parks in its await, Django's listener in receive()
        closed = time.monotonic_ns()
    # Leaving the block closed the socket (FIN); the close time is read just before it.
    got = probe.wait(n, wanted, timeout=args.cancel_timeout)
    latencies = {event: (stamp - closed) / 1e3 for event, (stamp, _) in got.items()}
    reason = got[ON_CANCEL][1] if ON_CANCEL in got else None
    missing = wanted - got.keys()
    error = f"no {', '.join(sorted(missing))} within {args.cancel_timeout:g} s" if missing else None
    return latencies, reason, error


def latency(args: argparse.Namespace, deadline: float) -> list[str]:
    slots = latency_slots(args.noise_floor)
    wanted = {
        key: {IN_VIEW, ON_CANCEL} if slot.variant == "graceful" else {IN_VIEW}
        for key, slot in slots.items()
    }
    probe = Probe()
    result = Latencies()
    numbers = itertools.count(1)
    servers: dict[str, Server] = {}
    done = 0
    try:
        servers = start_servers(slots, "latency", env={"BENCH_PROBE": probe.address})
        for key in (BASE, TESTED):  # warm-up: first requests import and set up things
            for _ in range(args.latency_warmup):
                *_, error = disconnect_once(
                    servers[key].port, slots[key].path, next(numbers), probe, wanted[key], args
                )
                if error is not None:
                    raise ServerError(f"{slots[key].name}: {error}:\n{servers[key].tail()}")
        for i in range(args.latency_iterations):
            if i >= 5 and time.monotonic() > deadline:
                log(f"  time budget reached after {i} iterations")
                break
            for key in order(i):
                latencies, reason, error = disconnect_once(
                    servers[key].port, slots[key].path, next(numbers), probe, wanted[key], args
                )
                for event, micros in latencies.items():
                    if event != "started":
                        result.add(key, event, micros)
                if reason is not None:
                    result.reasons[reason] += 1
                if error is not None:
                    result.missed[key] += 1
                    log(f"  iteration {i + 1}, {slots[key].name}: {error}")
            done = i + 1
            if done % 10 == 0:
                log(f"  {done} iterations")
    finally:
        for server in servers.values():
            server.stop(10)
        probe.close()
    return latency_report(args, slots, result, done)


def latency_report(
    args: argparse.Namespace, slots: dict[str, Slot], result: Latencies, done: int
) -> list[str]:
    title = (
        f"(c) {floor(args)}disconnect -> cancel latency under {uvicorn_flavour()}: {done} "
        f"interleaved iterations per variant; the client closes the socket {args.settle * 1e3:g} "
        "ms after the view started; µs from the close to the event in the view"
    )
    lines = [title, "", "| variant | event | n | median µs | p95 µs | min .. max µs |"]
    lines.append("|---|---|---:|---:|---:|---:|")
    for key in (BASE, TESTED):
        for event in (IN_VIEW, ON_CANCEL):
            values = result.get(key, event)
            if values:
                lines.append(
                    f"| {slots[key].name} | {EVENT_NAMES[event]} | {len(values)} | "
                    f"{statistics.median(values):.0f} | {p95(values):.0f} | "
                    f"{min(values):.0f} .. {max(values):.0f} |"
                )
    lines.append("")
    base = result.get(BASE, IN_VIEW)
    for event in (IN_VIEW, ON_CANCEL):
        tested = result.get(TESTED, event)
        if not base or not tested:
            continue
        added = statistics.median(tested) - statistics.median(base)
        verdict = "met" if added <= args.latency_goal * 1e3 else "NOT met"
        line = (
            f"added latency ({EVENT_NAMES[event]} vs the baseline's in-view): median "
            f"{added:+.0f} µs (goal <= {args.latency_goal:g} ms: {verdict}), "
            f"p95 {p95(tested) - p95(base):+.0f} µs"
        )
        if len(tested) == len(base):  # no misses: iteration i of each ran back to back
            paired = [t - b for t, b in zip(tested, base, strict=True)]
            line += f"; per pair: median {statistics.median(paired):+.0f} µs"
        lines.append(line)
    reasons = ", ".join(f"{reason} x{count}" for reason, count in result.reasons.items())
    missed = ", ".join(f"{slots[key].name} {result.missed[key]}" for key in (BASE, TESTED))
    lines.append(f"(on_cancel reasons: {reasons or '-'}; missed iterations: {missed})")
    return lines


# -- main ----------------------------------------------------------------------------


def round_arguments(
    doc: str | None,
    *,
    iterations: int,
    rounds: int,
    server_rounds: int,
    duration: int,
    budget: float,
) -> argparse.ArgumentParser:
    """The options of a measurement in rounds, (a) in-process and (b) under Uvicorn."""
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
        __doc__, iterations=200, rounds=20, server_rounds=8, duration=2, budget=90.0
    )
    parser.add_argument(
        "--latency-iterations", type=int, default=50, help="disconnects per variant"
    )
    parser.add_argument("--latency-warmup", type=int, default=3, help="uncounted disconnects")
    parser.add_argument("--settle", type=float, default=0.02, help="s from start to close")
    parser.add_argument("--cancel-timeout", type=float, default=3.0, help="s to wait per cancel")
    parser.add_argument("--latency-goal", type=float, default=1.0, help="added latency goal, ms")
    parser.add_argument("--skip-server", action="store_true", help="skip (b)")
    parser.add_argument("--skip-latency", action="store_true", help="skip (c)")
    parser.add_argument(
        "--noise-floor",
        action="store_true",
        help="the baseline in both slots: the differences shown are the measurement's noise",
    )
    args = parser.parse_args(argv)
    counts = (args.iterations, args.rounds, args.server_rounds, args.duration, args.connections)
    if min(*counts, args.latency_iterations) < 1 or args.settle < 0 or args.cancel_timeout <= 0:
        parser.error("counts and durations must be >= 1, --settle >= 0")
    began = begin()
    # No new round of (a) after 15 % of the budget, of (b) after 80 %, of (c) after 100 %;
    # each still runs a minimum (2 rounds, 5 iterations).
    header = f"{versions('django', 'asgiref')}, {machine()}"
    log(header)
    out: list[str] = [header, ""]
    if not args.skip_in_process:
        log("(a) in-process ...")
        out += [*asyncio.run(in_process(args, began + 0.15 * args.budget)), ""]
    if not args.skip_server:
        log("(b) under Uvicorn ...")
        out += [*under_uvicorn(args, began + 0.8 * args.budget), ""]
    if not args.skip_latency:
        log("(c) disconnect -> cancel latency ...")
        out += [*latency(args, began + args.budget), ""]
    out.append(f"(total {time.monotonic() - began:.0f} s; load avg at end {load_average()})")
    publish("cancel-noise-floor.md" if args.noise_floor else "cancel.md", "\n".join(out), began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
