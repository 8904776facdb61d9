"""Shutdown at scale: 1,000 hung requests and 1,000 open websockets in one worker, then SIGTERM.

The one idea: a deploy's SIGTERM reaches a worker holding many connections at once. Does
every hung request still get a complete 503, every websocket a 1012 close frame, and
does the server exit within the budget, and what does the shutdown cost in memory and CPU?

For each server (its usual command line, default worker count: one worker process) and
each variant of the bench project (plain Django + plain Channels; django_graceful with
``GRACE_PERIOD=2, CANCEL_TIMEOUT=1``, no hooks, ``DRAIN_DELAY`` 0: a budget of 3 s), on a
fresh server: one asyncio client on raw sockets opens ``--requests`` GETs to a view that
sleeps for an hour and ``--websockets`` websockets to a consumer that stays open, and
waits until every view and consumer has written its mark. Then a sampler thread reads
the server's whole process group from /proc (VmRSS and threads summed over its processes; utime +
stime, per process, from just before the SIGTERM to the last sample before the main
process exited), the main process gets SIGTERM, and the client records what each
request got (status and whole body, or nothing: EOF, reset) and each websocket's close
code (1006: no close frame). Past ``--cap`` seconds after the SIGTERM the server is
killed, and the table says so.

Run: ``.venvs/py311/bin/python bench/scale.py [--servers uvicorn daphne] [--requests 1000]
[--websockets 1000] [--variants graceful plain] [--cap 60] [--runs 1]``
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import os
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path: the repository instead (a
# file of bench/ would shadow a package: bench/websockets.py the ``websockets`` package).
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from bench.harness import (  # noqa: E402
    RESULTS,
    SERVER_NAMES,
    VARIANTS,
    Reply,
    Server,
    ServerError,
    _parse,
    arguments,
    begin,
    http_get,
    log,
    publish,
    versions,
)
from bench.websockets import SPARE_FDS, raise_fd_limit, wait_exit  # noqa: E402
from django_graceful._diagnosis.drill import group_members  # noqa: E402

#: variant -> (ASGI app, settings module)
SCALE_VARIANTS = {
    "graceful": ("bench.project.asgi_scale:application", "bench.project.settings_scale"),
    "plain": ("bench.project.asgi_scale_plain:application", "bench.project.settings_scale_plain"),
}
LABELS = {"graceful": "django_graceful", "plain": "plain Django + Channels"}
#: GRACE_PERIOD + CANCEL_TIMEOUT of bench.project.settings (no hooks, DRAIN_DELAY 0).
BUDGET = 2 + 1
#: Connections being opened at once (connect + request sent, or the websocket handshake).
OPENING = 100
#: How long the connections may take to be all in flight, and how long without progress.
OPEN_TIMEOUT = 90.0
STALL = 8.0
#: How long the clients may still read after the server exited (EOFs, late closes).
AFTER_EXIT = 5.0
#: Seconds between two samples of the server's processes.
SAMPLE_EVERY = 0.05
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the server's process group, read from /proc ----------------------------------------


@dataclass(frozen=True)
class ProcessSample:
    rss_kb: int  # VmRSS
    ticks: int  # utime + stime, clock ticks
    threads: int


def read_process(pid: int) -> ProcessSample | None:
    """What /proc says of ``pid`` now; None once it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # state ppid pgrp ... (field 3 on)
    ticks = int(fields[11]) + int(fields[12])  # utime (14), stime (15)
    fields_of = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields_of:
        return None  # a zombie has no VmRSS
    return ProcessSample(
        int(fields_of["VmRSS"].split()[0]), ticks, int(fields_of["Threads"].split()[0])
    )


class Sampler(threading.Thread):
    """Samples process group ``pgid`` every ``SAMPLE_EVERY`` s until stopped."""

    def __init__(self, pgid: int) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.pgid = pgid
        self.baseline = self.sample()
        self.last: dict[int, int] = {pid: p.ticks for pid, p in self.baseline.items()}
        self.rss_before = sum(p.rss_kb for p in self.baseline.values())
        self.rss_peak = self.rss_before
        self.threads_before = sum(p.threads for p in self.baseline.values())
        self.threads_peak = self.threads_before
        self.samples = 1
        self._done = threading.Event()
        self._lock = threading.Lock()

    def sample(self) -> dict[int, ProcessSample]:
        taken = {}
        for pid in group_members(self.pgid):
            info = read_process(pid)
            if info is not None:
                taken[pid] = info
        return taken

    def run(self) -> None:
        while not self._done.wait(SAMPLE_EVERY):
            taken = self.sample()
            with self._lock:
                if self._done.is_set():
                    return  # the exit was seen: later samples are not "before exit"
                self.samples += 1
                self.rss_peak = max(self.rss_peak, sum(p.rss_kb for p in taken.values()))
                self.threads_peak = max(self.threads_peak, sum(p.threads for p in taken.values()))
                for pid, p in taken.items():
                    self.last[pid] = p.ticks

    def stop(self) -> None:
        with self._lock:
            self._done.set()
        self.join(timeout=5)

    @property
    def cpu_seconds(self) -> float:
        """CPU time the group spent from the baseline to the last sample."""
        base = {pid: p.ticks for pid, p in self.baseline.items()}
        return sum(ticks - base.get(pid, 0) for pid, ticks in self.last.items()) / CLK_TCK


# -- the clients: raw sockets on one event loop ------------------------------------------


@dataclass
class HttpProbe:
    """One GET /hang/: what came back, and when it ended (monotonic)."""

    sent: bool = False
    data: bytearray = field(default_factory=bytearray)
    error: str | None = None
    ended_at: float | None = None

    def outcome(self, signalled: float | None) -> str:
        if not self.sent:
            return f"not sent ({self.error})"
        reply = Reply(error=self.error)
        _parse(bytes(self.data), reply)
        if self.ended_at is None:
            got = "nothing, still open" if reply.status is None else f"{reply.status}, no end"
        elif reply.status is None:
            got = f"nothing ({self.error or ('EOF' if not self.data else 'garbled')})"
        else:
            got = str(reply.status) + ("" if reply.complete else f" cut ({reply.body()})")
        if self.ended_at is not None and signalled is not None and self.ended_at < signalled:
            got += " before SIGTERM"
        return got


@dataclass
class WsProbe:
    """One websocket: whether it opened, the close code it got, how it ended."""

    opened: bool = False
    code: int | None = None  # from the server's close frame
    error: str | None = None
    ended_at: float | None = None

    def outcome(self, signalled: float | None) -> str:
        if not self.opened:
            return f"not opened ({self.error})"
        if self.code is not None:
            got = str(self.code)
        elif self.ended_at is None:
            got = "still open"
        else:
            got = f"1006 ({self.error or 'EOF'}, no close frame)"
        if self.ended_at is not None and signalled is not None and self.ended_at < signalled:
            got += " before SIGTERM"
        return got


def _error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "EOF"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


async def http_client(port: int, gate: asyncio.Semaphore, probe: HttpProbe) -> None:
    transport: asyncio.WriteTransport | None = None
    try:
        async with gate:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
            transport = writer.transport
            writer.write(b"GET /hang/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            await writer.drain()
            probe.sent = True
        while chunk := await reader.read(65536):
            probe.data += chunk
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        probe.error = _error(exc)
    finally:
        if transport is not None:
            transport.abort()
    probe.ended_at = time.monotonic()


def _frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (the mask is zero: XOR leaves the payload as it is)."""
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    mask = await reader.readexactly(4) if second & 0x80 else b""
    payload = await reader.readexactly(length)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return first & 0x0F, payload


async def ws_client(port: int, gate: asyncio.Semaphore, probe: WsProbe) -> None:
    transport: asyncio.WriteTransport | None = None
    try:
        async with gate:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
            transport = writer.transport
            key = base64.b64encode(os.urandom(16))
            writer.write(
                b"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b"?"
            if status != b"101":
                probe.error = f"HTTP {status.decode(errors='replace')}"
                probe.ended_at = time.monotonic()
                return
            probe.opened = True
        while True:
            opcode, payload = await _read_frame(reader)
            if opcode == 0x8:  # close: note the code, answer it, wait for the server's EOF
                probe.code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                with contextlib.suppress(OSError):
                    writer.write(_frame(0x8, payload[:2]))
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reader.read(), 2)
                break
            if opcode == 0x9:  # ping
                writer.write(_frame(0xA, payload))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        probe.error = _error(exc)
    finally:
        if transport is not None:
            transport.abort()
    probe.ended_at = time.monotonic()


# -- one run -------------------------------------------------------------------------------


@dataclass
class Run:
    server: str
    variant: str
    requests: int
    websockets: int
    index: int = 0  # which run of this server and variant (1, 2, ...; 0: the only one)
    in_flight: tuple[int, int] = (0, 0)  # marks written: views begun, consumers accepted
    open_seconds: float = 0.0
    http: collections.Counter[str] = field(default_factory=collections.Counter)
    ws: collections.Counter[str] = field(default_factory=collections.Counter)
    exit_after: float | None = None  # None: still running at the cap, killed
    exit_code: int | None = None
    leftovers: bool = False
    rss_before: float = 0.0  # MB
    rss_peak: float = 0.0
    threads: tuple[int, int] = (0, 0)  # before -> max during the shutdown
    cpu: float = 0.0
    samples: int = 0
    error: str | None = None


def count_marks(path: Path) -> tuple[int, int]:
    if not path.exists():
        return 0, 0
    lines = path.read_text().splitlines()
    return (
        sum(line.startswith("hang ") for line in lines),
        sum(line.startswith("ws-open ") for line in lines),
    )


async def wait_in_flight(run: Run, marks: Path) -> None:
    """Until every view and consumer has marked, or nothing moved for ``STALL`` s."""
    began = time.monotonic()
    target = (run.requests, run.websockets)
    seen, moved = (-1, -1), began
    while time.monotonic() < began + OPEN_TIMEOUT:
        now = count_marks(marks)
        if now == target:
            break
        if now != seen:
            seen, moved = now, time.monotonic()
        elif time.monotonic() - moved > STALL:
            break
        await asyncio.sleep(0.1)
    run.in_flight = count_marks(marks)
    run.open_seconds = time.monotonic() - began


async def measure(server: Server, run: Run, marks: Path, cap: float) -> None:
    gate = asyncio.Semaphore(OPENING)
    https = [HttpProbe() for _ in range(run.requests)]
    wss = [WsProbe() for _ in range(run.websockets)]
    tasks = [asyncio.ensure_future(http_client(server.port, gate, p)) for p in https]
    tasks += [asyncio.ensure_future(ws_client(server.port, gate, p)) for p in wss]
    await wait_in_flight(run, marks)
    print(
        f"  {run.in_flight[0]}/{run.requests} requests and {run.in_flight[1]}/{run.websockets}"
        f" websockets in flight after {run.open_seconds:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    await asyncio.sleep(0.5)  # let the last ones settle: every view sleeps, every consumer waits
    assert server.proc is not None
    sampler = Sampler(server.proc.pid)
    sampler.start()
    server.terminate()
    signalled = server.signalled_at
    assert signalled is not None
    exited = await wait_exit(server, cap)
    sampler.stop()
    if exited is not None:
        run.exit_after = exited - signalled
        run.exit_code = server.proc.returncode
        pending = [t for t in tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=AFTER_EXIT)
        run.leftovers = server.group_alive(within=1.0)
    for task in tasks:  # what is still open now is reported as such, before any kill
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    run.http.update(p.outcome(signalled) for p in https)
    run.ws.update(p.outcome(signalled) for p in wss)
    run.rss_before = sampler.rss_before / 1024
    run.rss_peak = sampler.rss_peak / 1024
    run.threads = (sampler.threads_before, sampler.threads_peak)
    run.cpu = sampler.cpu_seconds
    run.samples = sampler.samples


def run_one(
    server_kind: str, variant: str, requests: int, websockets: int, cap: float, index: int
) -> Run:
    run = Run(server_kind, variant, requests, websockets, index)
    name = f"scale-{server_kind}-{variant}" + (f"-{index}" if index else "")
    marks = RESULTS / f"{name}.marks"
    with contextlib.suppress(FileNotFoundError):
        marks.unlink()
    server = Server(
        server_kind,
        f"scale-{variant}",
        log_path=RESULTS / f"{name}.log",
        env={"BENCH_MARKS": str(marks)},
    )
    try:
        server.start()
        server.wait_listening(30)
        warm = http_get(server.port, "/hello/", timeout=15)  # loads Django (and our lifecycle)
        if warm.status != 200:
            raise ServerError(f"warm-up got {warm.describe()}:\n{server.tail()}")
        asyncio.run(measure(server, run, marks, cap))
    except ServerError as exc:
        run.error = str(exc).splitlines()[0]
        print(str(exc), file=sys.stderr)
    finally:
        server.kill()
        with contextlib.suppress(FileNotFoundError):
            marks.unlink()
    return run


# -- the table -----------------------------------------------------------------------------


def breakdown(counts: collections.Counter[str], wanted: str) -> str:
    good = counts.get(wanted, 0)
    others = [(k, n) for k, n in counts.most_common() if k != wanted]
    text = f"{good} / {sum(n for _, n in others)}"
    if others:
        text += " (" + ", ".join(f"{n}x {k}" for k, n in others) + ")"
    return text


def row(run: Run, cap: float) -> str:
    cells = [
        SERVER_NAMES[run.server],
        LABELS[run.variant] + (f" #{run.index}" if run.index else ""),
    ]
    if run.error:
        return "| " + " | ".join([*cells, f"error: {run.error}", *[""] * 8]) + " |"
    if run.exit_after is None:
        exit_text, within = f"> {cap:g} (killed)", "no"
    else:
        exit_text = f"{run.exit_after:.2f}"
        if run.exit_code:
            exit_text += f" (status {run.exit_code})"
        if run.leftovers:
            exit_text += " (workers left, killed)"
        within = "yes" if run.exit_after <= BUDGET + 1 and not run.leftovers else "no"
    cells += [
        f"{run.in_flight[0]}/{run.requests} + {run.in_flight[1]}/{run.websockets}",
        breakdown(run.http, "503"),
        breakdown(run.ws, "1012"),
        exit_text,
        within,
        f"{run.rss_before:.0f} → {run.rss_peak:.0f}",
        f"{run.threads[0]} → {run.threads[1]}",
        f"{run.cpu:.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__, servers=True, variants=SCALE_VARIANTS)
    parser.add_argument("--requests", type=int, default=1000, help="hung requests (0-5000)")
    parser.add_argument("--websockets", type=int, default=1000, help="open websockets (0-5000)")
    parser.add_argument("--cap", type=float, default=60.0, help="longest wait for the exit, s")
    parser.add_argument("--runs", type=int, default=1, help="fresh servers per row group (1-5)")
    args = parser.parse_args(argv)
    if not (0 <= args.requests <= 5000 and 0 <= args.websockets <= 5000):
        parser.error("--requests and --websockets: 0-5000")
    if not 5 <= args.cap <= 300 or not 1 <= args.runs <= 5:
        parser.error("--cap: 5-300 seconds; --runs: 1-5")
    raise_fd_limit(args.requests + args.websockets + SPARE_FDS)  # the server inherits it
    for variant, app in SCALE_VARIANTS.items():
        VARIANTS[f"scale-{variant}"] = app
    began = begin()
    runs: list[Run] = []
    for server in args.servers:
        for variant in args.variants:
            for index in range(1, args.runs + 1) if args.runs > 1 else (0,):
                log(f"{server} / {variant} {index or ''}:")
                run = run_one(server, variant, args.requests, args.websockets, args.cap, index)
                runs.append(run)
                log(f"  {row(run, args.cap)}")
    header = [
        f"Shutdown at scale: {args.requests} hung requests + {args.websockets} open websockets "
        f"in one worker, SIGTERM to the main process "
        f"({versions('django', 'channels', servers=args.servers)}; "
        f"{os.cpu_count()} CPUs; one client process on raw sockets).",
        f"django_graceful: GRACE_PERIOD 2 + CANCEL_TIMEOUT 1 = budget {BUDGET} s (no hooks, "
        "DRAIN_DELAY 0). Exit: main process, s after SIGTERM (its status if not 0), capped "
        f"at {args.cap:g} s. "
        "RSS, threads and CPU: the server's whole process group (summed), from just before the "
        "SIGTERM to the last sample before the exit.",
        "",
        "| server | app | in flight (requests + websockets) | requests answered 503 / other "
        "| websockets closed 1012 / other | exit after SIGTERM (s) | within budget + 1 s "
        "| RSS MB (before → max during shutdown) | threads (before → max) "
        "| CPU s of the shutdown |",
        "|---|---|---|---|---|---:|---|---:|---:|---:|",
    ]
    publish("scale.md", "\n".join([*header, *(row(run, args.cap) for run in runs)]), began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
