"""Diagnosis under faults: ``checkshutdown`` says OK only of workers it can vouch for,
and answers within its ``--timeout`` whatever the state store does.

- A worker killed with requests in flight (and replaced, or not): every mode names it,
  its pid, what it held and when it was last seen, first, and exits 1.
- A disk that fills while a stubborn request is in flight: the worker cannot write its
  last report and says what is left of it; ``checkshutdown`` never calls that OK.
- A cache that accepts connections and never answers: every mode gives up within its
  timeout, exit 2, and the workers' writes stay bounded (the watchdog never acts).
"""

from __future__ import annotations

import calendar
import contextlib
import errno
import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from django_graceful._diagnosis import report
from django_graceful._diagnosis.hangs import HangKind
from django_graceful._diagnosis.snapshot import host_id
from django_graceful._diagnosis.stores import (
    READ_TIMEOUT,
    BoundedStore,
    Document,
    FileStore,
    StoreError,
    live_timeout,
    pid_alive,
    safe_name,
)

from .servers import (
    DELIVERY_SERVERS,
    ROOT,
    WATCHDOG_LINE,
    Server,
    answered,
    get_or_error,
    in_background,
)
from .test_checkshutdown import REDIS, redis_listening
from .test_report import dead_pid, snapshot

#: A short budget: the test project's hooks bounded at 0.5 s each.
QUICK = {"GRACE_PERIOD": 0.5, "CANCEL_TIMEOUT": 0.5, "HOOK_TIMEOUT": 0.5}
#: The modes that read the workers' state (``--drill`` starts a server of its own).
READING_MODES = [[], ["--live"], ["--last"]]
#: How a dead worker is announced: ``worker PID on HOST died with N in flight (...)``.
DIED = re.compile(
    r"^worker (\d+) on (\S+) died with (\d+) in flight \(([^)]*)\), last seen \d+ \w+ ago "
    r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC\)"
)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def checkshutdown(
    env: dict[str, str], *args: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    """The command, run as an operator would (another process); and how long it took."""
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "django", "checkshutdown", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, time.monotonic() - began


def open_get(srv: Server, path: str) -> socket.socket:
    """A raw GET whose response is left unread."""
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def live_items(folder: Path, pid: int) -> list[str]:
    """What the live snapshot of ``pid`` holds (nothing, while there is none)."""
    path = folder / f"live-{safe_name(host_id())}-{pid}.json"
    try:
        return list(json.loads(path.read_text())["items"]["what"])
    except (OSError, ValueError):
        return []


def table_rows(result: subprocess.CompletedProcess[str]) -> list[str]:
    lines = result.stdout.splitlines()
    assert lines and lines[0].startswith("HOST"), result.stdout + result.stderr
    return lines[1:-1]


# -- a worker that died with work in flight (in-process) -------------------------------


def dead_worker(folder: Path, work: int, *, replaced: bool) -> int:
    """The live snapshot of a worker killed holding ``work`` requests; ``replaced``: a
    new worker of the same host has started since (and kept it as the dead one's last
    report). The dead worker's pid."""
    pid = dead_pid()
    items = [("request", "GET /slow/", "app.slow", 1500)] * work
    document = snapshot(items, pid=pid, time=time.time() - 3)
    FileStore(str(folder), host_id(), pid).prepare()
    FileStore(str(folder), host_id(), pid).write(json.dumps(document))
    if replaced:
        FileStore(str(folder), host_id(), os.getpid()).tidy(pid_alive)
        assert [p.name for p in folder.iterdir()] == [f"last-{safe_name(host_id())}-{pid}.json"]
    return pid


@pytest.mark.parametrize("replaced", [False, True], ids=["as-it-was", "kept-by-its-replacement"])
@pytest.mark.parametrize("mode", ["all", "live", "last"])
def test_a_worker_that_died_holding_work_is_the_first_thing_said(
    tmp_path: Path, replaced: bool, mode: str
) -> None:
    pid = dead_worker(tmp_path / "state", 12, replaced=replaced)
    checked = report.check(
        FileStore(str(tmp_path / "state")), live_only=mode == "live", last_only=mode == "last"
    )
    assert checked.status == report.PROBLEMS
    found = DIED.match(checked.reason)
    assert found is not None, checked.reason
    assert found.group(1, 2, 3, 4) == (str(pid), host_id(), "12", "12 requests")
    assert checked.reason.endswith("; 12 problems: 12 lost (0 live workers, 0 in flight; 1 died)")
    assert {(row.pid, row.source, row.hang, row.what) for row in checked.rows} == {
        (pid, "died", HangKind.LOST, "GET /slow/")
    }
    assert len(checked.rows) == 12


def test_what_a_dead_worker_held_is_counted_by_kind(tmp_path: Path) -> None:
    """A frozen event loop is said too (a row), but it is not work the worker held."""
    now = time.time()
    loop = {
        "blocked_ms": 2500,
        "since": now - 2.5,
        "location": None,
        "where": None,
        "chain": [],
        "item": None,
    }
    work = [("request", "GET /a/", None, 10), ("request", "GET /b/", None, 10)]
    work.append(("task", "flush", None, 90_000))
    pid = dead_pid()
    store = FileStore(str(tmp_path / "state"), host_id(), pid)
    store.prepare()
    store.write(json.dumps(snapshot(work, pid=pid, time=now, loop=loop)))
    checked = report.check(FileStore(str(tmp_path / "state")))
    found = DIED.match(checked.reason)
    assert found is not None and found.group(3, 4) == ("3", "2 requests, 1 task"), checked.reason
    assert sorted((row.kind, row.hang) for row in checked.rows) == [
        ("loop", HangKind.BLOCKED_LOOP),
        ("request", HangKind.LOST),
        ("request", HangKind.LOST),
        ("task", HangKind.LOST),
    ]


def test_a_worker_that_died_holding_nothing_is_unknown_never_ok(tmp_path: Path) -> None:
    pid = dead_worker(tmp_path / "state", 0, replaced=True)
    checked = report.check(FileStore(str(tmp_path / "state")))
    assert checked.status == report.CANNOT_CHECK and checked.rows == []
    assert checked.reason.startswith(
        f"cannot check: worker {pid} on {host_id()} ended without a shutdown report, nothing "
        "in flight when last seen 3 s ago ("
    )
    assert checked.reason.endswith(
        ": what it did after is unknown (0 live workers, 0 in flight; 1 died)"
    )


# -- a store read by deadline (in-process) ---------------------------------------------


class Silent:
    """A store whose reads never answer (until released)."""

    description = "cache 'state'"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def documents(self) -> tuple[list[Document], list[Any]]:
        self.calls += 1
        self.release.wait(30)
        return [], []


def test_a_store_that_does_not_answer_is_given_up_on_once() -> None:
    silent = Silent()
    store = BoundedStore(silent, 0.2)  # type: ignore[arg-type]
    try:
        began = time.monotonic()
        checked = report.check(store)
        took = time.monotonic() - began
        assert (checked.status, checked.reason) == (
            report.CANNOT_CHECK,
            "cannot check: cache 'state' did not answer within 0.2 s",
        )
        assert 0.2 <= took < 2
        began = time.monotonic()
        with pytest.raises(StoreError, match=r"did not answer within 0\.2 s"):
            store.documents()
        assert time.monotonic() - began < 0.1 and silent.calls == 1  # not asked again
    finally:
        silent.release.set()


def test_a_store_that_answers_is_read_through_the_bound(tmp_path: Path) -> None:
    store = BoundedStore(FileStore(str(tmp_path / "missing")), 5)
    with pytest.raises(StoreError, match="does not exist"):
        store.documents()
    assert store.gave_up is None  # an answer, if a refusal


def test_the_timeout_option(settings: Any, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="--timeout bounds the reads of the state store"):
        call_command("checkshutdown", "--static", "--timeout", "1")
    with pytest.raises(CommandError, match="--timeout"):
        call_command("checkshutdown", "--timeout", "0")


# -- on real servers --------------------------------------------------------------------

#: Requests sent at once: the worker that holds the most holds at least half of them.
SENT = 24
HEARTBEAT = 0.5


class Folder:
    """Workers' state in files: a new worker keeps a dead one's live snapshot as its
    last report; a dead worker of a server that starts none leaves it as it was."""

    def __init__(self, tmp_path: Path) -> None:
        self.folder = tmp_path / "state"
        self.graceful: dict[str, Any] = {"STATE_DIR": str(self.folder)}
        self.env: dict[str, str] = {}

    def live_items(self, pid: int) -> list[str]:
        return live_items(self.folder, pid)

    def wait_gone(self, srv: Server, pid: int, replaced: bool) -> None:
        if replaced:
            kept = self.folder / f"last-{safe_name(host_id())}-{pid}.json"
            wait_for(kept.exists, 30, f"the new worker to keep {pid}'s snapshot")
        else:
            assert srv.wait_exit(10) == -signal.SIGKILL

    def close(self) -> None:
        pass


class Cache:
    """Workers' state in Redis (STATE_BACKEND "cache"), under a key prefix of its own."""

    def __init__(self, tmp_path: Path) -> None:
        if not redis_listening():
            pytest.skip("no Redis at 127.0.0.1:6379")
        import redis

        self.prefix = f"graceful-faults-{tmp_path.name}-{os.getpid()}"
        self.client = redis.Redis.from_url(REDIS)
        self.graceful = {"STATE_BACKEND": "cache", "STATE_CACHE": "state"}
        self.env = {"GRACEFUL_TEST_CACHE": REDIS, "GRACEFUL_TEST_CACHE_PREFIX": self.prefix}

    def live_items(self, pid: int) -> list[str]:
        for key in self.client.scan_iter(f"{self.prefix}:*:live:*:{pid}"):
            value = self.client.get(key)
            if value is not None:  # Django's RedisCache pickles a str
                return list(json.loads(pickle.loads(value))["items"]["what"])
        return []

    def wait_gone(self, srv: Server, pid: int, replaced: bool) -> None:
        # No event says a cache entry did not expire: wait past the time a dead worker's
        # live snapshot used to live in the cache (it then vanished, and with it the worker).
        time.sleep(live_timeout(HEARTBEAT) + 1)

    def close(self) -> None:
        keys = list(self.client.scan_iter(f"{self.prefix}:*"))
        if keys:
            self.client.delete(*keys)


#: How each server ran when one of its workers was killed: (server, --workers, store).
#: With two, the server starts a new worker (which, with files, keeps the dead one's live
#: snapshot as its last report); alone, the snapshot stays as it was.
KILLED: dict[str, tuple[str, int | None, type[Folder | Cache]]] = {
    "gunicorn-uvicorn -w 2": ("gunicorn-uvicorn", 2, Folder),
    "gunicorn-asgi -w 2": ("gunicorn-asgi", 2, Folder),
    "uvicorn --workers 2": ("uvicorn", 2, Folder),
    "uvicorn alone": ("uvicorn", None, Folder),
    "gunicorn-uvicorn -w 2, cache": ("gunicorn-uvicorn", 2, Cache),
}


@pytest.mark.server
@pytest.mark.parametrize("case", list(KILLED))
def test_a_worker_killed_with_requests_in_flight_is_named_in_every_mode(
    case: str, tmp_path: Path
) -> None:
    server, workers, kind = KILLED[case]
    state = kind(tmp_path)
    graceful = {**state.graceful, "HEARTBEAT": HEARTBEAT, **QUICK}
    srv = Server(server, graceful=graceful, workers=workers, env=state.env)
    socks: list[socket.socket] = []
    try:
        srv.start()
        srv.wait_engaged(count=workers or 1)
        began = time.time()
        socks = [open_get(srv, f"/slow/?s=300&n={n}") for n in range(SENT)]
        held = Counter(event["pid"] for event in srv.wait_event("slow-begin", SENT, timeout=20))
        victim, count = held.most_common(1)[0]
        assert count >= SENT // 2
        wait_for(
            lambda: state.live_items(victim).count("GET /slow/") == count,
            10,
            f"a heartbeat of worker {victim} with its {count} requests",
        )
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        state.wait_gone(srv, victim, replaced=workers is not None)
        results = [checkshutdown(srv.env, *mode)[0] for mode in READING_MODES]
        as_json = json.loads(checkshutdown(srv.env, "--json")[0].stdout)
    finally:
        for sock in socks:
            sock.close()
        srv.kill()
        state.close()

    for mode, result in zip(READING_MODES, results, strict=True):
        said = f"checkshutdown {' '.join(mode)}:\n{result.stdout}{result.stderr}"
        assert result.returncode == 1, said
        found = DIED.match(result.stdout.splitlines()[-1])
        assert found is not None, said
        s = "s" * (count != 1)
        assert found.group(1, 2, 3, 4) == (
            str(victim),
            host_id(),
            str(count),
            f"{count} request{s}",
        )
        seen = calendar.timegm(time.strptime(found.group(5), "%Y-%m-%d %H:%M:%S"))
        assert began - 1 <= seen <= killed + 1, said
        lost = [row for row in table_rows(result) if f" {victim} " in row]
        assert len(lost) == count, said
        assert all(" died " in row and " lost " in row and "(GET /slow/)" in row for row in lost)
    assert as_json["status"] == 1
    assert {(w["pid"], w["source"]) for w in as_json["workers"] if w["pid"] == victim} == {
        (victim, "died")
    }


@contextlib.contextmanager
def small_disk(folder: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs at ``folder`` (0700, as a state folder must be); skips if it
    cannot be mounted. Unmounted after."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "none", str(folder)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True, timeout=10).returncode:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=10)


def fill(folder: Path) -> None:
    """Take every free page of the disk under ``folder``."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


#: When the disk fills -> what the worker then says is left of it, its last report lost.
LEFT = {
    "while-serving": r"its live snapshot written \d+\.\d s ago stays as its last word "
    r"\(checkshutdown reports the worker as died\)",
    "before-the-start": "no snapshot of this worker was ever written: checkshutdown cannot "
    "know it ran nor what it held",
}


@pytest.mark.server
@pytest.mark.parametrize("fills", list(LEFT))
@pytest.mark.parametrize("server", DELIVERY_SERVERS)
def test_a_disk_that_fills_is_never_ok(server: str, fills: str, tmp_path: Path) -> None:
    """The heartbeat is long (5 s): no write is under way when the disk fills, so none
    frees a page after (a write renames over the live snapshot, freeing its pages)."""
    with small_disk(tmp_path / "state") as folder:
        if fills == "before-the-start":
            fill(folder)
        graceful = {"STATE_DIR": str(folder), "HEARTBEAT": 5, **QUICK}
        srv = Server(server, graceful=graceful)
        try:
            srv.start()
            assert srv.get("/pid/").status_code == 200  # started (Daphne: on a first request)
            response = in_background(get_or_error, srv, "/stubborn/")
            (began,) = srv.wait_event("stubborn-begin")
            pid = began["pid"]
            if fills == "while-serving":
                wait_for(
                    lambda: "GET /stubborn/" in live_items(folder, pid),
                    15,
                    "a heartbeat with the stubborn request",
                )
                fill(folder)
            srv.signal(signal.SIGTERM)
            srv.wait_exit(30)
        finally:
            srv.kill()
        log = srv.log()
        results = {" ".join(mode): checkshutdown(srv.env, *mode)[0] for mode in READING_MODES}

    assert "hung at shutdown: request GET /stubborn/" in log, log
    # as on a disk with room (every server: tests/test_faults_hung_requests.py): the fault
    # is the report's only
    answered(response, 503, log)
    assert re.search(
        r"the last shutdown report is not written \(OSError: \[Errno 28\] No space left on "
        rf"device\); {LEFT[fills]}",
        log,
    ), log
    assert WATCHDOG_LINE not in log, log
    for mode, result in results.items():
        said = f"checkshutdown {mode}:\n{result.stdout}{result.stderr}"
        last = result.stdout.splitlines()[-1]
        if fills == "while-serving":  # its last word: the stubborn request, in flight
            assert result.returncode == 1, said
            found = DIED.match(last)
            assert found is not None and found.group(1, 3, 4) == (str(pid), "1", "1 request")
            (row,) = table_rows(result)
            assert " died " in row and " lost " in row and "(GET /stubborn/)" in row, said
        else:  # nothing of it to read
            assert result.returncode == 2, said
            assert last == f"cannot check: no state found in folder {folder}", said


# -- a cache that never answers ----------------------------------------------------------


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers; its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, name="black-hole", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join(5)
        listener.close()
        for sock in held:
            sock.close()


def black_holed(port: int) -> dict[str, str]:
    """The test project with STATE_BACKEND "cache" on a cache whose client would wait for
    an answer for two minutes."""
    return {
        "GRACEFUL_TEST_CACHE": f"redis://127.0.0.1:{port}/0",
        "GRACEFUL_TEST_CACHE_OPTIONS": json.dumps({"socket_timeout": 120}),
    }


CACHE = {"STATE_BACKEND": "cache", "STATE_CACHE": "state", "HEARTBEAT": 0.5}
#: Each mode that reads the store, and the bound it answers within.
BOUNDED = {
    "default": ([], READ_TIMEOUT),
    "--live": (["--live"], READ_TIMEOUT),
    "--last": (["--last"], READ_TIMEOUT),
    "--json": (["--json"], READ_TIMEOUT),
    "--timeout 1": (["--timeout", "1"], 1.0),
}
#: Starting Python and Django on a loaded machine, beyond the command's own bound.
STARTUP = 10.0


@pytest.mark.server
@pytest.mark.parametrize("mode", list(BOUNDED))
def test_a_black_holed_cache_is_given_up_on_in_every_mode(mode: str) -> None:
    args, bound = BOUNDED[mode]
    with black_hole() as port:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "tests.project.settings",
            "GRACEFUL_TEST_SETTINGS": json.dumps(CACHE),
            **black_holed(port),
        }
        result, took = checkshutdown(env, *args)
    said = result.stdout + result.stderr
    assert result.returncode == 2, said
    assert took < bound + STARTUP, said
    reason = f"cannot check: cache 'state' did not answer within {bound:g} s"
    if "--json" in args:
        assert json.loads(result.stdout)["reason"] == reason
    else:
        assert result.stdout.strip() == reason, said
        assert "hint: --timeout S waits longer for the state store" in result.stderr


@pytest.mark.server
def test_workers_on_a_black_holed_cache_serve_and_stop_within_their_budget(
    tmp_path: Path,
) -> None:
    with black_hole() as port:
        srv = Server("uvicorn", graceful={**CACHE, **QUICK}, env=black_holed(port))
        try:
            srv.start()
            srv.wait_engaged()
            assert srv.get("/pid/").status_code == 200
            response = in_background(get_or_error, srv, "/stubborn/")
            srv.wait_event("stubborn-begin")
            result, took = checkshutdown(srv.env, "--timeout", "1")
            srv.signal(signal.SIGTERM)
            srv.wait_exit(30)
        finally:
            srv.kill()
    log = srv.log()
    assert result.returncode == 2 and took < 1 + STARTUP, result.stdout + result.stderr
    assert result.stdout.strip() == "cannot check: cache 'state' did not answer within 1 s"
    assert "hung at shutdown: request GET /stubborn/" in log, log
    answered(response, 503, log)
    assert WATCHDOG_LINE not in log, log
    assert "could not write the worker snapshot to cache 'state'" in log, log


DRILL_SETTINGS = """
from tests.project.settings import *  # noqa: F403
ASGI_APPLICATION = "tests.project.asgi.application"
"""


@pytest.mark.server
def test_a_drill_on_a_black_holed_cache_says_so_within_its_bound(tmp_path: Path) -> None:
    """The drill asks the store many times (while its server serves, then for the last
    reports): it waits for it once."""
    (tmp_path / "drill_settings.py").write_text(DRILL_SETTINGS)
    with black_hole() as port:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
            "DJANGO_SETTINGS_MODULE": "drill_settings",
            "GRACEFUL_TEST_SETTINGS": json.dumps({**CACHE, **QUICK}),
            "TEST_DB": str(tmp_path / "db.sqlite3"),
            **black_holed(port),
        }
        result, took = checkshutdown(env, "--drill", "--url", "/pid/", "--json")
    said = result.stdout + result.stderr
    assert result.returncode == 2, said
    data = json.loads(result.stdout)
    assert data["reason"].startswith(
        f"cannot check: cache 'state' did not answer within {READ_TIMEOUT:g} s: what the "
        "server published cannot be read ("
    ), said
    assert data["exit"]["within_budget"] is True, said
    # the server's start, one wait for the store, the budget: not a wait per read
    assert took < READ_TIMEOUT + data["budget"] + 2 * STARTUP, said
