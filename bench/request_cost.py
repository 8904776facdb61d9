"""What a request costs on each server: plain Django against django_graceful, in one run.

Usage: python bench/request_cost.py [--quick] [--servers KIND ...] [--views VIEW ...]
       [--variants VARIANT ...] [--rounds N] [--duration S] [--budget S] [--pg own|shared]
       [--instructions N [--starts N]]

Each server kind (one worker, its usual command line, access logs off) runs the bench
project three times over, all three up at once: plain Django (Granian RSGI's is plain
Django on Granian's ASGI interface: Django has no RSGI), django_graceful with
``REUSE_SYNC_THREADS`` off, and django_graceful with its default settings (reused sync
threads). Each is loaded in turn on each view, the order rotating each round (ABC, BCA,
CAB) so that drift and the neighbours' load hit all alike; the cells are medians of the
rounds, the ratios the median of each round's ratio to plain Django on the same server
(those ran back to back).

Views: ``async`` (a small ``JsonResponse`` from an async view), ``sync`` (the same from a
sync view), ``pg`` (a sync view running one PostgreSQL statement, ``CONN_MAX_AGE = 60``,
on a PostgreSQL cluster the benchmark starts for the run, with room for 500 connections
(``--pg shared``: the one on 127.0.0.1:5432, user postgres, database ``test``, whose
100 connections plain Django alone can take); skipped, with the reason, where neither
can be had); on demand ``stream`` (1 MiB streamed from an async iterator).
Variants on demand: ``django-rsgi`` (plain Django on RSGI, Granian RSGI only, Python >=
3.12 and Django >= 6.0) and ``bare`` (no framework: what the server and its interface cost
by themselves; ``async`` and ``stream`` only).

Metrics: the server's CPU per request (user + system of its whole process tree, from
/proc, before and after the round, over the answers completed), requests per second, p99
latency (``wrk -t1 -c16 --latency``; without wrk, ``apt-get install wrk``, an asyncio
keep-alive client in this process) and, on ``pg``, the PostgreSQL backends the server
opened during the round (Django's ``connection_created``, read from the server between
rounds) and how many of its backends were still open at the round's end
(``pg_stat_activity`` by ``application_name``); then the server collects its garbage, so
that plain Django's abandoned connections do not pile up in PostgreSQL.

The summary sets the issue's goals against each server: django_graceful's defaults
>= 1.5x plain Django's requests/s on ``pg`` and >= 1.3x on ``async``; backends opened per
round <= the requests in flight (``--connections``) + 2; ``REUSE_SYNC_THREADS`` off <=
1.02x plain Django's CPU per request. On a shared 2-core machine a round's ratio moves by
several per cent: read the min .. max beside each ratio.

``--instructions N`` (some ten minutes) counts instead: each variant's user-space
instructions per request under callgrind, on Uvicorn (or Daphne), ``N`` requests at a time
on one connection, each variant's server started ``--starts`` times (default 3),
interleaved. Within one start a count moves by less than 0.5 % whatever else the machine
does, where CPU time moves by 10 % and more; from one start to the next by up to 2 %
(where the allocator puts things): hence the several starts, and ratios of starts side by
side. It is how a change of a few per cent in the path of every request is seen. Needs
valgrind. ``BENCH_CALLGRIND_KEEP=DIR`` keeps the dumps there, for callgrind_annotate.

``--quick`` (about a minute): Uvicorn and Granian RSGI, 2 rounds of 1 s. The full run
(the defaults: five servers, 5 rounds of 3 s) takes about 15 minutes. The tables go to
stdout and to bench/results/request-cost-py3XX[-quick].md, the server logs beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path: the repository instead (a
# file of bench/ would shadow a package: bench/websockets.py the ``websockets`` package).
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from bench.harness import (  # noqa: E402
    RESULTS,
    SERVER_NAMES,
    VARIANTS,
    Load,
    LoadFn,
    Server,
    ServerError,
    begin,
    group_cpu_seconds,
    http_get,
    load_average,
    load_client,
    log,
    publish,
    read_response_body,
    rotation,
    source_state,
    version,
    versions,
)
from bench.project.views import JSON_BODY_SIZE, STREAM_SIZE  # noqa: E402
from django_graceful._cli.ports import free_port  # noqa: E402
from django_graceful._cli.servers import KINDS  # noqa: E402

#: The server kinds that run unless --servers says.
DEFAULT_SERVERS = ("uvicorn", "granian-rsgi", "granian", "daphne", "gunicorn-uvicorn")
QUICK_SERVERS = ("uvicorn", "granian-rsgi")
#: Flags that turn access logs off where a server writes them by default.
QUIET = {"uvicorn": ("--no-access-log", "--log-level", "warning"), "daphne": ("-v", "0")}

#: The apps this benchmark adds to the harness's variants: (app, settings module).
APPS = {
    "django-rsgi": ("bench.project.rsgi_plain:application", "bench.project.settings_plain"),
    "bare-asgi": ("bench.project.bare:asgi_app", "bench.project.settings_plain"),
    "bare-rsgi": ("bench.project.bare:rsgi_app", "bench.project.settings_plain"),
}


@dataclass(frozen=True)
class View:
    key: str
    name: str
    path: str
    size: int  # the body every answer has, in bytes
    database: bool = False


#: The PostgreSQL view's answer (``bench.project.views_db.pg``): ``{"value": 1}``.
PG_BODY_SIZE = len(b'{"value": 1}')
VIEWS = {
    view.key: view
    for view in (
        View("async", "async JSON", "/json/", JSON_BODY_SIZE),
        View("sync", "sync JSON", "/sync/json/", JSON_BODY_SIZE),
        View("pg", "sync, 1 PostgreSQL query", "/sync/pg/", PG_BODY_SIZE, database=True),
        View("stream", "async, 1 MiB streamed", "/stream/", STREAM_SIZE),
    )
}
DEFAULT_VIEWS = ("async", "sync", "pg")


@dataclass(frozen=True)
class Variant:
    key: str
    name: str
    app: str  # a key of the harness's VARIANTS (or of APPS)
    views: tuple[str, ...] | None = None  # the views it serves; None: all
    servers: tuple[str, ...] | None = None  # the server kinds it runs on; None: all

    def launch(self, server: str) -> tuple[str, str] | None:
        """(the server kind that runs it, its app) for ``server``'s table; None: not there."""
        if self.servers is not None and server not in self.servers:
            return None
        rsgi = KINDS[server].interface == "rsgi"
        if self.key == "plain" and rsgi:
            return "granian", self.app  # Django speaks no RSGI: Granian's ASGI instead
        if self.key == "bare":
            return server, "bare-rsgi" if rsgi else "bare-asgi"
        return server, self.app


PLAIN, OFF, DEFAULT = "plain", "off", "default"
ALL_VARIANTS = {
    variant.key: variant
    for variant in (
        Variant(PLAIN, "plain Django", "plain"),
        Variant(OFF, "django_graceful, REUSE_SYNC_THREADS off", "graceful"),
        Variant(DEFAULT, "django_graceful, default settings", "graceful-reuse"),
        Variant("django-rsgi", "django-rsgi", "django-rsgi", servers=("granian-rsgi",)),
        Variant("bare", "no framework", "bare", views=("async", "stream")),
    )
}
DEFAULT_VARIANTS = (PLAIN, OFF, DEFAULT)

#: The issue's goals: ratios to plain Django on the same server, same run.
GOAL_RPS = {"pg": 1.5, "async": 1.3}  # django_graceful's defaults, requests/s, at least
GOAL_BACKENDS_OVER_IN_FLIGHT = 2  # backends opened per round, at most in flight + this
GOAL_OFF_CPU = 1.02  # REUSE_SYNC_THREADS off, CPU per request, at most


# -- PostgreSQL ---------------------------------------------------------------------

#: The shared server the tests use (``--pg shared``).
SHARED_PG_PORT = 5432
#: Connections the benchmark's own PostgreSQL takes: plain Django leaves a backend per
#: request open until its garbage is collected, 100 and more at 16 requests in flight,
#: past the 100 of PostgreSQL's default (``--pg shared`` takes them from everyone else).
OWN_PG_CONNECTIONS = 500


def _pg_bindir() -> Path | None:
    """Where initdb and pg_ctl are (Debian's /usr/lib/postgresql/N/bin, or on PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


class Postgres:
    """The database the ``pg`` view queries, and the benchmark's own connection to it:
    how many backends a server holds open. ``own``: a cluster of its own, in a temporary
    folder, for this run (as the ``postgres`` user when run as root); else the server on
    ``SHARED_PG_PORT``."""

    def __init__(self, own: bool) -> None:
        self.folder: Path | None = None
        self.bindir = _pg_bindir() if own else None
        self.port = SHARED_PG_PORT
        if own:
            self._start()
        import psycopg

        dsn = f"host=127.0.0.1 port={self.port} user=postgres connect_timeout=3"
        self.conn = psycopg.connect(f"{dsn} dbname={'postgres' if own else 'test'}")
        self.conn.autocommit = True
        if own:
            self.conn.execute("CREATE DATABASE test")

    def _pg(self, program: str, *argv: str, check: bool = True) -> None:
        """Run a PostgreSQL program (as the ``postgres`` user when this is root)."""
        assert self.bindir is not None
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        cmd = [*prefix, str(self.bindir / program), *argv]
        subprocess.run(cmd, capture_output=True, timeout=60, check=check)

    def _start(self) -> None:
        if self.bindir is None:
            raise RuntimeError("initdb is not installed (use --pg shared for the one on 5432)")
        self.folder = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        self.port = free_port()
        data = str(self.folder / "data")
        self._pg("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            f"-c max_connections={OWN_PG_CONNECTIONS}"
        )
        self._pg("pg_ctl", "-D", data, "-o", options, "-l", str(self.folder / "log"), "-w", "start")

    def open_backends(self, application_name: str) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchone()
        return int(row[0]) if row else 0

    def describe(self) -> str:
        version = self.conn.info.server_version
        which = "its own, for this run" if self.folder else f"the shared one on {self.port}"
        return f"PostgreSQL {version // 10000}.{version % 10000} ({which})"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
        if self.folder is not None and self.bindir is not None:
            self._pg(
                "pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop", check=False
            )
            shutil.rmtree(self.folder, ignore_errors=True)


def postgres(own: bool) -> tuple[Postgres | None, str | None]:
    """The database, or why the ``pg`` view cannot run here."""
    if find_spec("psycopg") is None:
        return None, "psycopg is not installed"
    try:
        return Postgres(own), None
    except Exception as exc:  # psycopg.OperationalError, a failed initdb, ...
        detail = (
            exc.stderr.decode(errors="replace")
            if isinstance(exc, subprocess.CalledProcessError)
            else exc
        )
        where = (
            "its own PostgreSQL did not start"
            if own
            else f"PostgreSQL at 127.0.0.1:{SHARED_PG_PORT} (database test) does not answer"
        )
        return None, f"{where}: {detail}"


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


# -- measuring ----------------------------------------------------------------------


@dataclass
class Sample:
    """One round of one variant on one view."""

    rps: float
    cpu_us: float | None  # the server's CPU per completed answer
    p99_ms: float | None
    errors: int
    opened: int | None = None  # PostgreSQL backends opened during the round
    left_open: int | None = None  # the server's backends still open at its end


@dataclass
class Cell:
    samples: list[Sample] = field(default_factory=list)

    def values(self, name: str) -> list[float]:
        return [v for s in self.samples if (v := getattr(s, name)) is not None]

    def median(self, name: str) -> float | None:
        values = self.values(name)
        return statistics.median(values) if values else None

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.samples)


@dataclass
class Running:
    """One variant's server for one server kind's table."""

    variant: Variant
    server: Server
    pg_name: str | None  # its connections' application_name

    def opened(self) -> int:
        """PostgreSQL connections the server's process has opened so far."""
        reply = http_get(self.server.port, "/backends/", timeout=10)
        if reply.status != 200 or not reply.complete:
            raise ServerError(f"{self.variant.name}: GET /backends/: {reply.describe()}")
        return int(json.loads(reply.content)["opened"])


def measure(
    run: Running, view: View, load: LoadFn, connections: int, duration: int, pg: Postgres | None
) -> Sample:
    assert run.server.proc is not None
    counted = view.database and run.pg_name is not None
    opened = run.opened() if counted else 0
    before = group_cpu_seconds(run.server.proc.pid)
    result: Load = load(run.server.port, view.path, connections, duration)
    after = group_cpu_seconds(run.server.proc.pid)
    sample = Sample(
        rps=result.rps,
        cpu_us=(after - before) / result.requests * 1e6 if result.requests else None,
        p99_ms=result.p99_ms,
        errors=result.errors,
    )
    if counted:
        assert pg is not None and run.pg_name is not None
        sample.opened = run.opened() - opened
        sample.left_open = pg.open_backends(run.pg_name)
        http_get(run.server.port, "/collect/", timeout=10)
    return sample


def check(run: Running, view: View) -> None:
    """One request, answered in full (a wrong answer would be measured as a fast one)."""
    reply = http_get(run.server.port, view.path, timeout=10)
    if reply.status != 200 or not reply.complete or reply.body_bytes != view.size:
        raise ServerError(
            f"{run.variant.name} on {view.path}: {reply.describe()}, body {reply.body()} "
            f"({view.size} B expected):\n{run.server.tail()}"
        )


@dataclass
class Table:
    """One server kind's results: a cell per (variant, view)."""

    server: str
    variants: list[Variant]
    views: list[View]
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    opened_total: dict[str, int] = field(default_factory=dict)  # whole run, by variant
    not_run: str | None = None

    def cell(self, variant: str, view: str) -> Cell | None:
        return self.cells.get((variant, view))

    def ratios(self, variant: str, view: str, name: str) -> list[float]:
        """Each round's ratio of ``variant`` to plain Django on ``view``."""
        mine, base = self.cell(variant, view), self.cell(PLAIN, view)
        if mine is None or base is None:
            return []
        pairs = zip(mine.samples, base.samples, strict=False)
        return [a / b for s, t in pairs if (a := getattr(s, name)) and (b := getattr(t, name))]

    def rounds(self) -> int:
        return min((len(c.samples) for c in self.cells.values()), default=0)


def serves(variant: Variant, view: View) -> bool:
    return variant.views is None or view.key in variant.views


def run_server(
    server: str,
    variants: list[Variant],
    views: list[View],
    args: argparse.Namespace,
    load: LoadFn,
    pg: Postgres | None,
    deadline: float,
) -> Table:
    """Start ``server``'s variants, warm each up on each view, then interleaved rounds
    (at least two; no new one after ``deadline``)."""
    table = Table(server, [v for v in variants if v.launch(server)], views)
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    runs: dict[str, Running] = {}
    for variant in table.variants:
        kind, app = variant.launch(server) or (server, variant.app)
        env: dict[str, str] = {}
        pg_name = None
        if pg is not None and any(v.database for v in views) and variant.key != "bare":
            pg_name = f"bench-{os.getpid()}-{server}-{variant.key}"
            env = {"BENCH_PG_APP": pg_name, "BENCH_PG_PORT": str(pg.port)}
        runs[variant.key] = Running(
            variant,
            Server(
                kind,
                app,
                log_path=RESULTS / f"request-cost-{tag}-{server}-{variant.key}.log",
                extra=QUIET.get(kind, ()),
                env=env,
            ),
            pg_name,
        )
    try:
        for run in runs.values():
            run.server.start()
        for run in runs.values():
            run.server.wait_listening(60)
        for view in views:
            for run in runs.values():
                if serves(run.variant, view):
                    check(run, view)
                    load(run.server.port, view.path, args.connections, args.warmup)
                    if view.database:
                        http_get(run.server.port, "/collect/", timeout=10)
        for round_no in range(args.rounds):
            if round_no >= 2 and time.monotonic() > deadline:
                log(f"  {server}: time budget reached after {round_no} rounds")
                break
            for view in views:
                keys = [key for key, run in runs.items() if serves(run.variant, view)]
                done = []
                for key in rotation(round_no, keys):
                    sample = measure(runs[key], view, load, args.connections, args.duration, pg)
                    table.cells.setdefault((key, view.key), Cell()).samples.append(sample)
                    backends = "" if sample.opened is None else f", {sample.opened} backends"
                    done.append(f"{key} {sample.rps:.0f}/s {sample.cpu_us or 0:.0f} µs{backends}")
                log(f"  {server} round {round_no + 1} {view.key}: " + "; ".join(done))
        for key, run in runs.items():
            if run.pg_name is not None:
                table.opened_total[key] = run.opened()
    finally:
        for run in runs.values():
            run.server.stop(10)
    return table


# -- the report ---------------------------------------------------------------------


def number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} ({min(values):.2f} .. {max(values):.2f})"


def backends_text(cell: Cell) -> str:
    opened = cell.values("opened")
    if not opened:
        return "-"
    left = cell.values("left_open")
    return f"{statistics.median(opened):.0f} (max {max(opened):.0f}; {max(left):.0f} open)"


def server_table(table: Table) -> list[str]:
    name = SERVER_NAMES[table.server]
    if table.not_run:
        return [f"### {name}: not run ({table.not_run})", ""]
    lines = [
        f"### {name}: {table.rounds()} rounds",
        "",
        "| view | variant | server CPU µs/req | req/s | p99 ms | PG backends opened per round "
        "| CPU ÷ plain | req/s ÷ plain | p99 ÷ plain | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for view in table.views:
        for variant in table.variants:
            cell = table.cell(variant.key, view.key)
            if cell is None:
                continue
            base = variant.key == PLAIN
            lines.append(
                f"| {view.name} | {variant.name} | {number(cell.median('cpu_us'))} | "
                f"{number(cell.median('rps'))} | {number(cell.median('p99_ms'), 1)} | "
                f"{backends_text(cell)} | "
                + " | ".join(
                    "1" if base else ratio(table.ratios(variant.key, view.key, metric))
                    for metric in ("cpu_us", "rps", "p99_ms")
                )
                + f" | {cell.errors} |"
            )
    if table.opened_total:
        totals = ", ".join(
            f"{ALL_VARIANTS[key].name} {count}" for key, count in table.opened_total.items()
        )
        lines += ["", f"PostgreSQL backends opened over the whole run (warm-up too): {totals}."]
    return [*lines, ""]


def verdict(ok: bool | None, text: str) -> str:
    if ok is None:
        return "-"
    return f"{'PASS' if ok else 'MISS'} {text}"


def summary(tables: list[Table], connections: int) -> list[str]:
    bound = connections + GOAL_BACKENDS_OVER_IN_FLIGHT
    lines = [
        "### Against the goals (ratios to plain Django on the same server, medians of the "
        "rounds' ratios)",
        "",
        f"| server | default: req/s on pg ≥ {GOAL_RPS['pg']}x | default: req/s on async ≥ "
        f"{GOAL_RPS['async']}x | default: backends opened per round ≤ {connections} in "
        f"flight + {GOAL_BACKENDS_OVER_IN_FLIGHT} | reuse off: CPU/req ≤ {GOAL_OFF_CPU}x "
        "(async, sync, pg) |",
        "|---|---|---|---|---|",
    ]
    for table in tables:
        if table.not_run:
            lines.append(f"| {SERVER_NAMES[table.server]} | not run | | | |")
            continue
        cells = []
        for view, goal in GOAL_RPS.items():
            values = table.ratios(DEFAULT, view, "rps")
            got = statistics.median(values) if values else None
            cells.append(verdict(None if got is None else got >= goal, f"{got or 0:.2f}x"))
        pg_cell = table.cell(DEFAULT, "pg")
        opened = pg_cell.values("opened") if pg_cell else []
        cells.append(verdict(max(opened) <= bound, f"max {max(opened):.0f}") if opened else "-")
        off = {
            view: statistics.median(values)
            for view in ("async", "sync", "pg")
            if (values := table.ratios(OFF, view, "cpu_us"))
        }
        text = ", ".join(f"{value:.2f}x" for value in off.values())
        cells.append(verdict(all(v <= GOAL_OFF_CPU for v in off.values()), text) if off else "-")
        lines.append(f"| {SERVER_NAMES[table.server]} | " + " | ".join(cells) + " |")
    return [*lines, ""]


# -- instructions (--instructions) -----------------------------------------------------

#: Server kinds whose one process serves (valgrind follows no worker process).
ONE_PROCESS = ("uvicorn", "daphne")
#: Measured counts per variant and view, each over this many requests.
INSTRUCTION_SAMPLES = 3
#: Requests before the count starts (imports, caches, the lazy startup).
INSTRUCTION_WARMUP = 50
#: django_graceful's ``HEARTBEAT`` (and the heartbeat thread's probe interval) while
#: counting: its snapshot and its probe of the loop (four times a second) cost per
#: second, not per request; under valgrind, which slows the server down some fifty times
#: (more while the machine is busy), a count would charge each request with fifty times
#: their share (the probe alone: some 6,000 instructions a request at 20 requests a
#: second; 0.01 % of a request at full speed). Left out here; bench/snapshots.py
#: measures a snapshot.
INSTRUCTION_HEARTBEAT = 3600


def keep_alive_requests(port: int, path: str, count: int) -> None:
    """``count`` requests for ``path``, one after the other on one kept-alive
    connection; raises on an answer that is not a whole 200."""

    async def send_them() -> None:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(count):
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
                if head[9:12] != b"200" or await read_response_body(reader, head) is None:
                    raise ServerError(f"GET {path}: {head[:200]!r}")
        finally:
            writer.close()

    asyncio.run(send_them())


def callgrind(pid: int, *argv: str) -> None:
    subprocess.run(["callgrind_control", *argv, str(pid)], capture_output=True, check=True)


def count_instructions(server: Server, views: list[View], requests: int) -> dict[str, list[float]]:
    """Instructions per request on each view (``INSTRUCTION_SAMPLES`` counts of ``requests``
    requests each) of ``server``, started under callgrind with the count off."""
    assert server.proc is not None
    folder = Path(server.env["BENCH_CALLGRIND_DIR"])
    for view in views:
        keep_alive_requests(server.port, view.path, INSTRUCTION_WARMUP)
    callgrind(server.proc.pid, "--instr=on")
    counts: dict[str, list[float]] = {}
    for view in views:
        for n in range(INSTRUCTION_SAMPLES):
            callgrind(server.proc.pid, "--zero")
            keep_alive_requests(server.port, view.path, requests)
            callgrind(server.proc.pid, f"--dump={view.key}-{n}")
            dump = max(folder.glob("callgrind.out.*"), key=lambda f: f.stat().st_mtime)
            total = re.search(r"(?m)^(?:summary|totals): *(\d+)", dump.read_text())
            if total is None:
                raise ServerError(f"no instruction count in {dump}")
            counts.setdefault(view.key, []).append(int(total.group(1)) / requests)
    return counts


def instructions(args: argparse.Namespace, chosen: list[Variant], views: list[View]) -> list[str]:
    """``--instructions``: each variant's instructions per request, counted by callgrind
    (user-space instructions of the whole process: the event loop, Django, the threads of
    its sync code; not the kernel's), against plain Django on the same server.

    Each variant's server starts ``--starts`` times, the order rotating each time (ABC,
    BCA, CAB): a count moves by up to 2 % from one start of the same server to the next
    (hash seeds are fixed; what moves is where the allocator puts things), so one start
    per variant cannot tell 1 % apart. A start's count is the median of its
    ``INSTRUCTION_SAMPLES``; a ratio is each start's to plain Django's start of the same
    round, given as the median (min .. max) of the rounds."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    lines = [
        "| server | view | variant | instructions per request (min .. max) "
        "| ÷ plain (min .. max) |",
        "|---|---|---|---:|---:|",
    ]
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    by_key = {variant.key: variant for variant in chosen}
    for kind in args.servers:
        if kind not in ONE_PROCESS:
            log(f"{SERVER_NAMES[kind]}: not counted (valgrind counts one process)")
            continue
        #: variant -> view -> one count per start (the median of its samples).
        counts: dict[str, dict[str, list[float]]] = {key: {} for key in by_key}
        for start in range(args.starts):
            for key in rotation(start, list(by_key)):
                got = count_one_start(kind, by_key[key], views, args.instructions, tag)
                for view_key, samples in got.items():
                    counts[key].setdefault(view_key, []).append(statistics.median(samples))
                log(
                    f"  {kind} start {start + 1} {key}: "
                    + ", ".join(f"{k} {statistics.median(v):,.0f}" for k, v in got.items())
                )
        for view in views:
            base = counts[PLAIN][view.key]
            for variant in chosen:
                mine = counts[variant.key][view.key]
                ratios = [a / b for a, b in zip(mine, base, strict=True)]
                ratio_text = (
                    "1"
                    if variant.key == PLAIN
                    else f"{statistics.median(ratios):.3f} ({min(ratios):.3f} .. {max(ratios):.3f})"
                )
                if variant.key == OFF:
                    ok = statistics.median(ratios) <= GOAL_OFF_CPU
                    ratio_text += f" ({'PASS' if ok else 'MISS'} ≤ {GOAL_OFF_CPU})"
                lines.append(
                    f"| {SERVER_NAMES[kind]} | {view.name} | {variant.name} | "
                    f"{statistics.median(mine):,.0f} ({min(mine):,.0f} .. {max(mine):,.0f}) "
                    f"| {ratio_text} |"
                )
    return lines


def count_one_start(
    kind: str, variant: Variant, views: list[View], requests: int, tag: str
) -> dict[str, list[float]]:
    """One start of ``variant``'s server under callgrind: its counts per view."""
    folder = Path(tempfile.mkdtemp(prefix="bench-callgrind-"))
    env = {
        "PYTHONHASHSEED": "0",
        "BENCH_HEARTBEAT": str(INSTRUCTION_HEARTBEAT),
        "BENCH_PROBE_INTERVAL": str(INSTRUCTION_HEARTBEAT),
        "BENCH_CALLGRIND_DIR": str(folder),
    }
    server = Server(
        kind,
        variant.app,
        log_path=RESULTS / f"request-instructions-{tag}-{kind}-{variant.key}.log",
        extra=QUIET.get(kind, ()),
        env=env,
    )
    server.cmd = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={folder}/callgrind.out",
        *server.cmd,
    ]
    try:
        server.start()
        server.wait_listening(300)
        return count_instructions(server, views, requests)
    finally:
        server.stop(60)
        keep = os.environ.get("BENCH_CALLGRIND_KEEP")
        if keep:  # the dumps, for callgrind_annotate
            target = Path(keep) / f"{variant.key}-{time.time_ns()}"
            shutil.copytree(folder, target)
        shutil.rmtree(folder, ignore_errors=True)


# -- main ---------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog=" ".join(doc.split("\n\n")[1].split()),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="about a minute: Uvicorn and Granian RSGI (unless --servers), 2 rounds of 1 s",
    )
    parser.add_argument(
        "--servers", nargs="+", choices=list(SERVER_NAMES), help="server kinds (default: five)"
    )
    parser.add_argument(
        "--views", nargs="+", choices=list(VIEWS), default=list(DEFAULT_VIEWS), help="views"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(ALL_VARIANTS),
        default=list(DEFAULT_VARIANTS),
        help="variants (plain Django always runs: the ratios' base)",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5; quick 2)")
    parser.add_argument("--duration", type=int, help="seconds of load per round (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of load before round 1")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--pg",
        choices=("own", "shared"),
        default="own",
        help="the pg view's PostgreSQL: a cluster of its own for the run (default: plain "
        "Django leaves 100 and more backends open, PostgreSQL's default limit), or the "
        f"shared one on 127.0.0.1:{SHARED_PG_PORT} (database test)",
    )
    parser.add_argument(
        "--instructions",
        type=int,
        metavar="N",
        help="instead of the load: count each variant's instructions per request under "
        "callgrind (valgrind), N requests per count, one after the other on one connection "
        f"(servers of one process: {', '.join(ONE_PROCESS)}; default uvicorn): the same "
        "within about 1 %% from run to run, whatever else the machine does",
    )
    parser.add_argument(
        "--starts",
        type=int,
        default=3,
        metavar="N",
        help="with --instructions: start each variant's server N times, interleaved "
        "(a count moves by up to 2 %% from one start to the next)",
    )
    parser.add_argument(
        "--budget", type=float, help="seconds; no new round after it (default 1500; quick 60)"
    )
    args = parser.parse_args(argv)
    if args.servers is None and args.instructions:
        args.servers = ["uvicorn"]
    if args.servers is None:
        args.servers = list(QUICK_SERVERS if args.quick else DEFAULT_SERVERS)
    for name, full, quick in (("rounds", 5, 2), ("duration", 3, 1), ("budget", 1500.0, 60.0)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if min(args.rounds, args.duration, args.warmup, args.connections) < 1:
        parser.error("--rounds, --duration, --warmup and --connections must be >= 1")
    if args.instructions is not None and args.instructions < 1:
        parser.error("--instructions must be >= 1")
    if args.starts < 1:
        parser.error("--starts must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    began = begin()
    VARIANTS.update(APPS)
    load, tool = load_client(args.client, args.connections)
    notes: list[str] = []
    chosen = [ALL_VARIANTS[k] for k in ALL_VARIANTS if k in args.variants or k == PLAIN]
    if "django-rsgi" in args.variants and (missing := django_rsgi_missing()):
        notes.append(f"django-rsgi not run: {missing}")
        chosen = [v for v in chosen if v.key != "django-rsgi"]
    views = [VIEWS[k] for k in VIEWS if k in args.views]
    if args.instructions:
        return count_main(args, argv, chosen, views, began)
    pg = None
    if any(v.database for v in views):
        pg, reason = postgres(own=args.pg == "own")
        if reason:
            notes.append(f"the pg view is skipped: {reason}")
            log(f"the pg view is skipped: {reason}")
            views = [v for v in views if not v.database]
        else:
            assert pg is not None
            notes.append(f"The pg view's database: {pg.describe()}")
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    header = (
        f"{versions('django', 'asgiref', servers=args.servers)}; django_graceful at "
        f"{source_state()}; {os.cpu_count()} CPUs, load average at start {load_average()}"
    )
    log(header)
    tables: list[Table] = []
    try:
        for index, server in enumerate(args.servers):
            deadline = began + args.budget * (index + 1) / len(args.servers)
            log(f"{SERVER_NAMES[server]} ...")
            try:
                tables.append(run_server(server, chosen, views, args, load, pg, deadline))
            except ServerError as exc:
                log(f"  {server} not run: {exc}")
                tables.append(Table(server, chosen, views, not_run=str(exc).splitlines()[0]))
    finally:
        if pg is not None:
            pg.close()
    command = " ".join(["python bench/request_cost.py", *(argv or sys.argv[1:])]).strip()
    out = [
        f"## Request cost per server ({tag})",
        "",
        f"`{command}`: {header}, load average at the end {load_average()}.",
        f"Load: {tool}, {args.duration} s per variant per round, rounds rotating the order; "
        "one worker per server, access logs off. Cells: the median of the rounds; ratios: "
        "the median (min .. max) of each round's ratio to plain Django on the same server (for "
        "CPU and p99 below 1 is better, for req/s above 1). PG backends: opened during a "
        "round (the most in one round; the most still open at a round's end).",
        *(f"{note}." for note in notes),
        "",
    ]
    for table in tables:
        out += server_table(table)
    out += summary(tables, args.connections)
    publish(f"request-cost-{tag}{'-quick' if args.quick else ''}.md", "\n".join(out), began)
    errors = sum(c.errors for t in tables for c in t.cells.values())
    return 1 if errors or any(t.not_run for t in tables) else 0


def count_main(
    args: argparse.Namespace,
    argv: list[str] | None,
    chosen: list[Variant],
    views: list[View],
    began: float,
) -> int:
    """``--instructions``: the counts instead of the load (no database: its client's
    instructions are the same for every variant)."""
    views = [v for v in views if not v.database]
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    header = (
        f"{versions('django', 'asgiref', servers=args.servers)}; "
        f"django_graceful at {source_state()}"
    )
    log(header)
    command = " ".join(["python bench/request_cost.py", *(argv or sys.argv[1:])]).strip()
    out = [
        f"## Instructions per request ({tag})",
        "",
        f"`{command}`: {header}. Each variant's server under callgrind, its count on only "
        f"while {args.instructions} requests are sent one after the other on one kept-alive "
        f"connection, {INSTRUCTION_SAMPLES} counts per view and start (their median), "
        f"each variant's server started {args.starts} times, the order rotating (the "
        "median and min .. max of the starts; a ratio is each start's to plain Django's "
        "of the same round); the count of the user-space instructions of the whole process "
        "(the kernel's work, such as starting a thread per request, is not in it). "
        "django_graceful's snapshots and the heartbeat's probe of the event loop are left "
        f"out (HEARTBEAT and the probe's interval {INSTRUCTION_HEARTBEAT} s: they cost per "
        "second, not per request, and under valgrind, which slows the server down many "
        "times, a request would be charged many times their share). Counts agree within "
        "about 0.5 % within a start; from one start to the next the same server's moves by "
        "up to 2 %.",
        "",
        *instructions(args, chosen, views),
    ]
    publish(f"request-instructions-{tag}.md", "\n".join(out), began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
