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

Run: ``.venvs/py311/bin/python bench/rsgi.py`` and ``.venvs/py313/bin/python bench/rsgi.py``
(about 3 minutes each; ``--help``: ``--rounds``, ``--duration``, ``--connections``,
``--workloads``, ``--variants``, ``--budget``). The table goes to stdout and to
``bench/results/rsgi-py3XX.md``, the server logs next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path: keep it from shadowing
# anything named like a file of bench/.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    RESULTS,
    VARIANTS,
    Server,
    ServerError,
    install_cleanup,
    version,
)
from bench.overhead import Load, _Counts, _python_load, group_cpu_seconds  # noqa: E402
from bench.project.views import JSON_BODY_SIZE, STREAM_SIZE  # noqa: E402

#: Apps this benchmark adds to the harness's variants: (app, settings module).
APPS = {
    "ws-plain": ("bench.project.asgi_ws_plain:application", "bench.project.settings_ws_plain"),
    "ws-graceful": ("bench.project.asgi_ws:application", "bench.project.settings_ws"),
    "django-rsgi": ("bench.project.rsgi_plain:application", "bench.project.settings_plain"),
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
)
BASELINE = "a"
WORKLOADS = (
    Workload("json", "small JSON (JsonResponse)", "/json/", JSON_BODY_SIZE),
    Workload("stream", "1 MiB streamed (16 x 64 KiB, chunked)", "/stream/", STREAM_SIZE),
    Workload("ws", "websocket echo (Channels consumer)", WS_PATH, None, websocket=True),
)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


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
        default=[v.key for v in ALL_VARIANTS],
        help="which variants (default: all that can run here; (a) always runs)",
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
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or not 1 <= args.connections <= 1000:
        parser.error("--rounds >= 1, --duration > 0, --connections 1-1000")
    began = time.monotonic()
    install_cleanup()
    VARIANTS.update(APPS)
    RESULTS.mkdir(parents=True, exist_ok=True)

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
                "granian",
                app,
                log_path=RESULTS / f"rsgi-{tag}-{variant.key}-{kind}.log",
                interface=variant.interface,
            )
    cells: dict[str, dict[str, Cell]] = {w.key: {} for w in workloads}
    header = (
        f"Python {platform.python_version()}, Django {version('django')}, Granian "
        f"{version('granian')} (1 worker, {granian_loop()} loop, Granian's defaults), "
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
    text = "\n".join(out).rstrip() + "\n"
    print(text)
    path = RESULTS / f"rsgi-{tag}.md"
    path.write_text(text)
    log(f"(total {time.monotonic() - began:.0f} s; written to {path}; server logs next to it)")
    errors = sum(c.errors for w in cells.values() for c in w.values())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
