"""``checkshutdown --drill``: a deploy's SIGTERM, rehearsed on a real server, and what hung.

The drill starts the project as ``manage.py serve`` would (same command line, on
127.0.0.1 and a free port, in a process group of its own), waits until it answers,
sends ``--concurrency`` GET requests to each ``--url``, waits until the server's live
snapshots show them in flight, sends SIGTERM to the server process (as a container
runtime does), and times the exit against the shutdown budget. Then it reads the last
shutdown reports the server's workers wrote, and says what did not stop.

Which reports are the drill's: the server is started with ``GRACEFUL_HOST_ID`` set to
a fresh ``drill-<hex>`` id. Every process it forks (Granian's worker, Uvicorn's
``--workers``) inherits it and writes it into each snapshot and last report, so the
drill reads exactly its own server's documents, however many workers there were,
whatever their pids, and never another process's report, old or new, from the same
``STATE_DIR`` or cache. When it is done it removes those documents, and nothing else.

Verdict: something hung (exit status 1) when a last report lists work that did not
stop, a worker ended without a report, the server outlived the budget (plus the
watchdog's slack) or was ended by the watchdog, or processes of the server outlived
it. Nothing hung (0) when the requests finished or were cancelled cleanly within the
budget. 2: the drill could not be run (bad input, no server, it would not start, no
state to read).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
import types
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._cli.launch import SERVERS, ServerNotInstalled, app_target, command_line
from .._core.lifecycle import EXIT_SLACK, get_lifecycle
from ..checks import PROCESS_LOCAL_CACHES, asgi_application_path
from ..conf import ImproperlyConfiguredGraceful, get_settings
from .report import (
    CANNOT_CHECK,
    OK,
    PROBLEMS,
    SOURCE_DIED,
    Report,
    Unreadable,
    check,
    parse,
    table,
)
from .stores import (
    FILE_NAME,
    LAST,
    LIVE,
    PREFIX,
    CacheStore,
    FileStore,
    Store,
    StoreError,
    open_store,
    safe_name,
)

HOST = "127.0.0.1"
DEFAULTS: dict[str, Any] = {"server": "uvicorn", "urls": ["/"], "concurrency": 1, "wait": 0.0}
#: Seconds for the server to answer its first request.
READY_TIMEOUT = 30.0
#: What the readiness probe asks for: any HTTP answer (a 404 is fine) means it serves.
READY_PATH = "/__django_graceful_drill__/"
#: Seconds past ``budget + EXIT_SLACK`` before the drill kills the server's process group.
KILL_MARGIN = 10.0
#: Seconds a client waits for the server beyond the time the drill would kill it.
CLIENT_MARGIN = 30.0
#: Seconds the server's other processes (workers) may outlive it before they count.
LEFTOVER_WAIT = 2.0
#: Tries with a new port when the one picked was taken meanwhile.
PORT_TRIES = 3
POLL = 0.1
#: Server output lines shown when the drill cannot run (the tail of its output).
TAIL_LINES = 40
#: The most server log lines about what did not stop shown with a verdict.
MAX_LOG_LINES = 20
#: Server output lines worth showing with the verdict: our warnings, the watchdog's.
NOTEWORTHY = re.compile(
    r"\b(WARNING|ERROR|CRITICAL)\b|hung at shutdown|process still alive|did not finish within"
)
WATCHDOG = "process still alive"
PORT_IN_USE = re.compile(r"address already in use|errno 98|errno 48", re.IGNORECASE)


class DrillError(Exception):
    """The drill cannot be run; the message is a one-line reason."""

    def __init__(self, reason: str, tail: list[str] | None = None) -> None:
        super().__init__(reason)
        self.tail = tail or []


class Interrupted(BaseException):
    """The drill itself got SIGTERM (a cancelled CI job): stop, and take the server down."""


@dataclass(slots=True)
class Outcome:
    """What one client got."""

    url: str
    status: int | None = None
    bytes: int = 0
    error: str | None = None
    ended: float | None = None  # time.monotonic()

    @property
    def label(self) -> str:
        if self.status is None:
            return self.error or "no answer"
        return f"{self.status} {self.error}" if self.error else str(self.status)


@dataclass
class Drill:
    """Everything the drill saw; ``status``/``reason`` are its verdict."""

    status: int = CANNOT_CHECK
    reason: str = ""
    server: str = DEFAULTS["server"]
    host: str = ""
    urls: list[str] = field(default_factory=list)
    concurrency: int = 1
    budget: float | None = None
    argv: list[str] = field(default_factory=list)
    pid: int | None = None
    port: int | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    seen_in_flight: int = 0
    sent_at: float | None = None
    signalled_at: float | None = None
    exited_at: float | None = None
    exit_code: int | None = None
    killed: bool = False
    watchdog: bool = False
    leftover: int = 0
    report: Report | None = None
    problems: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)

    @property
    def exit_after(self) -> float | None:
        if self.signalled_at is None or self.exited_at is None:
            return None
        return self.exited_at - self.signalled_at

    def as_dict(self) -> dict[str, Any]:
        found = self.report.as_dict() if self.report is not None else {}
        signal_after = None
        if self.sent_at is not None and self.signalled_at is not None:
            signal_after = self.signalled_at - self.sent_at
        return {
            "status": self.status,
            "reason": self.reason,
            "server": self.server,
            "host": self.host,
            "command": self.argv,
            "pid": self.pid,
            "budget": self.budget,
            "requests": [
                {
                    "url": url,
                    "concurrency": self.concurrency,
                    "summary": summary(self._of(url)),
                    "outcomes": [
                        {
                            "status": o.status,
                            "bytes": o.bytes,
                            "error": o.error,
                            "ended_after_signal": self._after_signal(o.ended),
                        }
                        for o in self._of(url)
                    ],
                }
                for url in dict.fromkeys(self.urls)
            ],
            "in_flight_at_signal": self.seen_in_flight,
            "signal_after": _round(signal_after),
            "exit": {
                "after": _round(self.exit_after),
                "code": self.exit_code,
                "within_budget": self._within_budget(),
                "killed": self.killed,
                "watchdog": self.watchdog,
                "leftover_processes": self.leftover,
            },
            "problems": self.problems,
            "store": found.get("store", ""),
            "rows": found.get("rows", []),
            "workers": found.get("workers", []),
            "skipped": found.get("skipped", []),
            "log": self.log,
            "notes": self.notes,
            "tail": self.tail,
        }

    def _of(self, url: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.url == url]

    def _after_signal(self, when: float | None) -> float | None:
        if when is None or self.signalled_at is None:
            return None
        return _round(when - self.signalled_at)

    def _within_budget(self) -> bool | None:
        after = self.exit_after
        if after is None or self.budget is None:
            return None
        return not self.killed and after <= self.budget + EXIT_SLACK


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def main(options: dict[str, Any], stdout: Any, stderr: Any) -> int:
    """``checkshutdown --drill``: run it, show it, return the exit status."""
    drill = Drill()
    try:
        run(drill, options)
    except DrillError as exc:
        drill.status, drill.reason, drill.tail = CANNOT_CHECK, f"cannot drill: {exc}", exc.tail
    except Interrupted as exc:
        drill.status, drill.reason = CANNOT_CHECK, f"cannot drill: {exc} (server stopped)"
    except KeyboardInterrupt:
        drill.status, drill.reason = CANNOT_CHECK, "cannot drill: interrupted (server stopped)"
    show(drill, options.get("json", False), stdout, stderr)
    return drill.status


# -- the run --------------------------------------------------------------------------


def run(drill: Drill, options: dict[str, Any]) -> None:
    """Fill ``drill`` in; raises :class:`DrillError` when it cannot run."""
    drill.server = options.get("server") or DEFAULTS["server"]
    drill.urls = list(options.get("urls") or DEFAULTS["urls"])
    drill.concurrency = options.get("concurrency") or DEFAULTS["concurrency"]
    wait = options.get("wait") or DEFAULTS["wait"]
    for url in drill.urls:
        check_url(url)
    if drill.server not in SERVERS:
        raise DrillError(f"unknown server {drill.server!r}; choose from {', '.join(SERVERS)}")
    store = _store()
    path = asgi_application_path()
    if path is None:
        raise DrillError("set ASGI_APPLICATION in settings (e.g. 'myproject.asgi.application')")
    try:
        target = app_target(path)
    except ValueError as exc:
        raise DrillError(str(exc)) from None
    drill.budget = get_lifecycle().budget()
    drill.host = f"drill-{secrets.token_hex(4)}"
    from django.conf import settings

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": str(settings.SETTINGS_MODULE),
        "GRACEFUL_HOST_ID": drill.host,
        "PYTHONUNBUFFERED": "1",
    }
    with tempfile.TemporaryDirectory(prefix="graceful-drill-") as folder, _signals_end_drill():
        log_path = Path(folder) / "server.log"
        try:
            proc = _start(drill, target, env, log_path)
            try:
                _drill(drill, proc, store, log_path, wait)
            finally:
                _end(proc)
        finally:
            _forget(store, drill.host)


def check_url(url: str) -> None:
    if not url.startswith("/"):
        raise DrillError(f"--url {url!r}: a path must start with '/' (e.g. /slow/)")
    if not url.isprintable() or any(ch.isspace() for ch in url) or "#" in url:
        raise DrillError(f"--url {url!r}: a path without spaces, control characters or '#'")
    if not url.isascii():
        quoted = urllib.parse.quote(url, safe="/?&=%+:;,@!$'()*~")
        raise DrillError(f"--url {url!r}: percent-encode it ({quoted})")


def _store() -> Store:
    try:
        settings = get_settings()
    except ImproperlyConfiguredGraceful as exc:
        raise DrillError(f"GRACEFUL settings are invalid: {exc}") from None
    if settings.STATE_BACKEND == "cache":
        from django.conf import settings as django_settings

        caches = getattr(django_settings, "CACHES", {})
        backend = caches.get(settings.STATE_CACHE, {}).get("BACKEND")
        if backend in PROCESS_LOCAL_CACHES:
            raise DrillError(
                f"GRACEFUL['STATE_CACHE'] {settings.STATE_CACHE!r} is a "
                f"{backend.rsplit('.', 1)[-1]}, private to each process: the drill cannot "
                "read the server's report (graceful.W002); use a shared cache or "
                "STATE_BACKEND 'file'"
            )
    return open_store(settings)


def _start(
    drill: Drill, target: str, env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """The server, answering HTTP; a new port if the one picked was taken meanwhile."""
    assert drill.budget is not None
    for attempt in range(1, PORT_TRIES + 1):
        drill.port = free_port()
        try:
            drill.argv = command_line(
                drill.server, target, host=HOST, port=drill.port, workers=None, budget=drill.budget
            )
        except ServerNotInstalled as exc:
            raise DrillError(str(exc)) from None
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                drill.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the drill can end it all
            )
        drill.pid = proc.pid
        try:
            _wait_ready(proc, drill.port, log_path)
        except DrillError as exc:
            _end(proc)
            taken = PORT_IN_USE.search("\n".join(exc.tail))
            if taken and attempt < PORT_TRIES:
                continue
            raise
        except BaseException:
            _end(proc)
            raise
        return proc
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    """Until the server answers an HTTP request (any status); bounded."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        code = proc.poll()
        if code is not None:
            raise DrillError(
                f"the server exited with code {code} before it answered", tail(log_path)
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DrillError(
                f"the server did not answer HTTP within {READY_TIMEOUT:g} s", tail(log_path)
            )
        conn = http.client.HTTPConnection(HOST, port, timeout=min(5.0, remaining))
        try:
            conn.request("GET", READY_PATH, headers={"User-Agent": "django_graceful drill"})
            conn.getresponse().read()
            return
        except (OSError, http.client.HTTPException):
            time.sleep(POLL)
        finally:
            conn.close()


def _drill(
    drill: Drill, proc: subprocess.Popen[bytes], store: Store, log_path: Path, wait: float
) -> None:
    assert drill.budget is not None and drill.port is not None
    # A socket timeout, never hit while the server lives (its budget may yet grow, below).
    client_timeout = wait + drill.budget + EXIT_SLACK + KILL_MARGIN + CLIENT_MARGIN
    drill.sent_at = time.monotonic()
    threads = []
    for url in drill.urls:
        for _ in range(drill.concurrency):
            outcome = Outcome(url)
            drill.outcomes.append(outcome)
            thread = threading.Thread(
                target=fetch,
                args=(drill.port, url, client_timeout, outcome),
                name=f"drill {url}",
                daemon=True,
            )
            thread.start()
            threads.append(thread)
    seen_pids = _settle(drill, proc, store)
    limit = drill.budget + EXIT_SLACK + KILL_MARGIN
    if wait:
        time.sleep(wait)
    if proc.poll() is not None:
        raise DrillError(
            f"the server exited with code {proc.returncode} before SIGTERM", tail(log_path)
        )
    drill.seen_in_flight = sum(o.ended is None for o in drill.outcomes)
    drill.signalled_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # the main process only, as a container runtime does
    try:
        drill.exit_code = proc.wait(limit)
        drill.exited_at = time.monotonic()
    except subprocess.TimeoutExpired:
        drill.exited_at = time.monotonic()
        drill.killed = True
        _kill_group(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            drill.exit_code = proc.wait(5)
    drill.leftover = _outlived(proc.pid)
    for thread in threads:
        thread.join(max(0.1, drill.exited_at + 5 - time.monotonic()))
    output = log_path.read_text(errors="replace") if log_path.exists() else ""
    drill.watchdog = WATCHDOG in output
    drill.log = noteworthy(output)
    _verdict(drill, store, seen_pids, output)


def fetch(port: int, url: str, timeout: float, outcome: Outcome) -> None:
    """One GET; what it got goes into ``outcome``."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", url, headers={"User-Agent": "django_graceful drill"})
        response = conn.getresponse()
        outcome.status = response.status
        while chunk := response.read1(65536):
            outcome.bytes += len(chunk)
        if response.length:  # what Content-Length promised and never came
            outcome.error = "closed mid-body"
    except http.client.RemoteDisconnected:
        outcome.error = "closed without a response"
    except http.client.IncompleteRead:
        outcome.error = "closed mid-body"
    except ConnectionResetError:
        outcome.error = "connection reset"
    except ConnectionRefusedError:
        outcome.error = "connection refused"
    except TimeoutError:
        outcome.error = f"no answer within {timeout:g} s"
    except Exception as exc:  # whatever it was, the drill goes on and says it
        outcome.error = f"{type(exc).__name__}: {exc}"[:100]
    finally:
        outcome.ended = time.monotonic()
        conn.close()


def _settle(drill: Drill, proc: subprocess.Popen[bytes], store: Store) -> set[int]:
    """Wait until the live snapshots show every request in flight (or it ended); bounded.

    Returns the pids of the drill's workers seen publishing."""
    expected = Counter(_path(url) for url in drill.urls for _ in range(drill.concurrency))
    heartbeat = get_settings().HEARTBEAT
    limit = max(5.0, 3 * heartbeat + 1)
    deadline = time.monotonic() + limit
    pids: set[int] = set()
    while True:
        in_flight, seen, budget = _live(store, drill.host)
        pids |= seen
        if budget is not None and drill.budget is not None and budget > drill.budget + 0.05:
            # hooks the server registers itself (e.g. when asgi.py is imported)
            drill.notes.append(
                f"the server's shutdown budget is {budget:.1f} s (this process counted "
                f"{drill.budget:.1f} s: hooks registered in the server): using it"
            )
            drill.budget = budget
        ended = Counter(_path(o.url) for o in drill.outcomes if o.ended is not None)
        if all(in_flight[path] + ended[path] >= n for path, n in expected.items()):
            return pids
        if time.monotonic() > deadline or proc.poll() is not None:
            missing = sum(max(0, n - in_flight[p] - ended[p]) for p, n in expected.items())
            drill.notes.append(
                f"{missing} of {sum(expected.values())} requests not seen in flight within "
                f"{limit:g} s; SIGTERM sent all the same"
                if pids
                else f"no live snapshot from the server within {limit:g} s"
            )
            return pids
        time.sleep(POLL)


def _path(url: str) -> str:
    """The path as a snapshot shows it: decoded, no query string."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path)


def _live(store: Store, host: str) -> tuple[Counter[str], set[int], float | None]:
    """Requests in flight by path, worker pids, and the largest shutdown budget the
    workers published, in the drill's live snapshots."""
    in_flight: Counter[str] = Counter()
    pids: set[int] = set()
    budget = None
    for text in _live_texts(store, host):
        try:
            snapshot = parse(text)
        except Unreadable:
            continue
        if snapshot["host"] != host or snapshot["report"] != LIVE:
            continue
        pids.add(snapshot["pid"])
        if snapshot.get("budget") is not None:
            budget = max(budget or 0.0, float(snapshot["budget"]))
        kinds, items = snapshot["kinds"], snapshot["items"]
        for kind, what in zip(items["kind"], items["what"], strict=True):
            method, _, path = what.partition(" ")
            if kinds[kind] == "request" and method == "GET":
                in_flight[path] += 1
    return in_flight, pids, budget


def _live_texts(store: Store, host: str) -> list[str]:
    """The live snapshots that may be the drill's (read often: only those, for files)."""
    if isinstance(store, FileStore):
        texts = []
        mine = f"{LIVE}-{safe_name(host)}-"
        with contextlib.suppress(OSError):
            for name in os.listdir(store.folder):
                if name.startswith(mine) and FILE_NAME.match(name):
                    with contextlib.suppress(OSError, UnicodeDecodeError):
                        texts.append(Path(store.folder, name).read_text(encoding="utf-8"))
        return texts
    try:
        documents, _ = store.documents()
    except StoreError:
        return []
    return [d.text for d in documents if d.kind == LIVE and host in d.text]


def _verdict(drill: Drill, store: Store, seen_pids: set[int], output: str) -> None:
    assert drill.budget is not None
    with _as_host(drill.host):  # so that check() sees the drill's dead workers as dead
        full = check(store)
    report = Report(
        OK,
        "",
        rows=[row for row in full.rows if row.host == drill.host],
        workers=[worker for worker in full.workers if worker.host == drill.host],
        skipped=[s for s in full.skipped if safe_name(drill.host) in s.source],
        store=full.store,
    )
    drill.report = report
    problems = Counter(row.hang for row in report.rows)
    listed = [f"{n} {kind}" for kind, n in problems.most_common()]
    for worker in report.workers:
        if worker.source == SOURCE_DIED:
            listed.append(f"worker {worker.pid} ended without a shutdown report")
    for pid in sorted(seen_pids - {w.pid for w in report.workers}):
        listed.append(f"worker {pid} left no shutdown report")
    after = drill.exit_after or 0.0
    name = drill.server
    if drill.killed:
        listed.append("did not exit")
        how = f"{name} still running {after:.1f} s after SIGTERM: killed"
    else:
        if drill.watchdog:
            listed.append("ended by the watchdog")
        elif after > drill.budget + EXIT_SLACK:
            listed.append("exited past the budget")
        how = f"{name} exited {after:.1f} s after SIGTERM"
    if drill.leftover:
        s = "es" * (drill.leftover != 1)
        listed.append(f"{drill.leftover} process{s} outlived the server")
    how += f", budget {drill.budget:.1f} s"
    drill.problems = listed
    published = bool(report.workers or seen_pids)
    if not published:
        drill.tail = tail_of(output)
        silent = (
            f"the server published no state in {report.store}: is the ASGI application "
            "wrapped in GracefulASGI?"
        )
        drill.notes.append(silent)
    if listed:
        n = len(report.rows) + len(listed) - len(problems)  # each hung item, each finding
        drill.status = PROBLEMS
        drill.reason = f"{n} problem{'s' * (n != 1)}: {', '.join(listed)} ({how})"
    elif not published:
        drill.status = CANNOT_CHECK
        drill.reason = f"cannot check: {silent} ({how})"
    else:
        drill.status = OK
        drill.reason = f"OK: nothing hung ({how})"
    report.status, report.reason = drill.status, drill.reason


# -- processes ------------------------------------------------------------------------


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Kill whatever is left of the server's process group, and reap the server."""
    if proc.poll() is None or group_members(proc.pid):
        _kill_group(proc.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _outlived(pgid: int) -> int:
    """How many processes of the server's group still run ``LEFTOVER_WAIT`` after it
    exited (they are killed)."""
    deadline = time.monotonic() + LEFTOVER_WAIT
    while (left := len(group_members(pgid))) and time.monotonic() < deadline:
        time.sleep(POLL)
    if left:
        _kill_group(pgid)
    return left


def group_members(pgid: int) -> list[int]:
    """Pids of process group ``pgid`` still running (zombies waiting for a reaper excluded)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # after "pid (name)": state ppid pgrp …
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


@contextlib.contextmanager
def _signals_end_drill() -> Iterator[None]:
    """While the drill runs, its own SIGTERM (a cancelled CI job) takes the server down."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum: int, frame: types.FrameType | None) -> None:
        raise Interrupted(f"the drill got signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _as_host(host: str) -> Iterator[None]:
    """Read the store as the drill's server's host (snapshots.host_id() reads the env)."""
    previous = os.environ.get("GRACEFUL_HOST_ID")
    os.environ["GRACEFUL_HOST_ID"] = host
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("GRACEFUL_HOST_ID", None)
        else:
            os.environ["GRACEFUL_HOST_ID"] = previous


def _forget(store: Store, host: str) -> None:
    """Remove the drill server's snapshots and reports (host ``host``), nothing else."""
    with contextlib.suppress(Exception):
        if isinstance(store, FileStore):
            mine = safe_name(host)
            for name in os.listdir(store.folder):
                match = FILE_NAME.match(name.lstrip(".").split(".json")[0] + ".json")
                if match is not None and match.group(2) == mine:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(store.folder, name))
        elif isinstance(store, CacheStore):
            cache = store.cache
            names: list[str] = []

            def drop(index: dict[str, dict[str, float]]) -> None:
                for kind in (LIVE, LAST):
                    for name in [n for n in index[kind] if n.rpartition(":")[0] == host]:
                        names.append(f"{PREFIX}{kind}:{name}")
                        del index[kind][name]

            store._update_index(drop)  # the same package's store: its index, minus ours
            cache.delete_many(names)


# -- showing --------------------------------------------------------------------------


def summary(outcomes: list[Outcome]) -> str:
    """``2x 200, 1x 503``: what the clients of one URL got."""
    counts = Counter(o.label for o in outcomes)
    return ", ".join(f"{n}x {label}" for label, n in counts.most_common())


def show(drill: Drill, as_json: bool, stdout: Any, stderr: Any) -> None:
    if as_json:
        stdout.write(json.dumps(drill.as_dict(), indent=2, ensure_ascii=False))
        stdout.flush()
        return
    if drill.budget is not None and drill.pid is not None:
        stdout.write(
            f"drill: {drill.server}, pid {drill.pid} on {HOST}:{drill.port}, shutdown budget "
            f"{drill.budget:.1f} s"
        )
        width = max((len(url) for url in drill.urls), default=0)
        for url in dict.fromkeys(drill.urls):
            outcomes = drill._of(url)
            ends = sorted(t for o in outcomes if (t := drill._after_signal(o.ended)) is not None)
            stdout.write(f"  GET {url.ljust(width)}  {summary(outcomes)}{_when(ends)}")
        if drill.signalled_at is not None:
            n = len(drill.outcomes)
            line = f"  SIGTERM with {drill.seen_in_flight} of {n} request{'s' * (n != 1)} in flight"
            if drill.exit_after is not None:
                verb = "killed" if drill.killed else "exited"
                line += f"; {verb} after {drill.exit_after:.1f} s ({exit_status(drill.exit_code)})"
            stdout.write(line)
    if drill.report is not None and drill.report.rows:
        stdout.write(table(drill.report))
    stdout.flush()  # in order with stderr, when both go to one CI log
    # the server's own words: its output's tail when it would not run, else its warnings
    lines = drill.tail or drill.log[:MAX_LOG_LINES]
    if not drill.tail and len(drill.log) > MAX_LOG_LINES:
        lines.append(f"… {len(drill.log) - MAX_LOG_LINES} more lines")
    for line in lines:
        stderr.write(f"server: {line}")
    for line in drill.notes:
        stderr.write(line)
    stderr.flush()
    stdout.write(drill.reason)
    stdout.flush()


def _when(ends: list[float]) -> str:
    """When the clients of one URL got their answer, relative to SIGTERM."""
    if not ends:
        return ""
    low, high = ends[0], ends[-1]
    if high < 0:
        low, high, side = -high, -low, "before"
    elif low >= 0:
        side = "after"
    else:
        return f"  (ended {-low:.1f} s before to {high:.1f} s after SIGTERM)"
    span = f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f} to {high:.1f}"
    return f"  (ended {span} s {side} SIGTERM)"


def exit_status(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"ended by {signal.Signals(-code).name}"
        return f"ended by signal {-code}"
    return f"exit status {code}"


def noteworthy(output: str) -> list[str]:
    """The server's lines about what did not stop (warnings and worse, the watchdog); a
    line repeated with other numbers (times, counts) is shown once, with how often."""
    lines: list[str] = []
    seen: Counter[str] = Counter()
    first: dict[str, int] = {}
    for line in output.splitlines():
        if not NOTEWORTHY.search(line) or line.startswith((" ", "\t")) or READY_PATH in line:
            continue
        key = re.sub(r"\d+", "#", line)
        seen[key] += 1
        if key not in first:
            first[key] = len(lines)
            lines.append(line.rstrip())
    for key, n in seen.items():
        if n > 1:
            lines[first[key]] += f"  (and {n - 1} more like it)"
    return lines


def tail(log_path: Path, lines: int = TAIL_LINES) -> list[str]:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return tail_of(text, lines)


def tail_of(output: str, lines: int = TAIL_LINES) -> list[str]:
    return [line.rstrip() for line in output.splitlines()[-lines:]]
