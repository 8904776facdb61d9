"""``manage.py checkshutdown`` against real servers: it names the view, the line and why."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.project import views_hangs

from .markers import marked
from .servers import DELIVERY_SERVERS, ROOT, Server, in_background, running

pytestmark = pytest.mark.server

SWALLOWER = "tests.project.views_hangs.swallower"
VIEWS = Path(views_hangs.__file__)

#: The report is the worker's own (its snapshot), whatever the server; that every server
#: delivers a client's leaving to the view is tests/test_cancel_servers.py's.
REPORTED_ON = DELIVERY_SERVERS


def settings(tmp_path: Path, **values: Any) -> dict[str, Any]:
    return {"STATE_DIR": str(tmp_path / "state"), "HEARTBEAT": 0.5, **values}


def checkshutdown(
    srv: Server, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The command, run as an operator would: another process, the server's settings."""
    return subprocess.run(
        [sys.executable, "-m", "django", "checkshutdown", *args],
        cwd=ROOT,
        env={**srv.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def open_get(srv: Server, path: str) -> socket.socket:
    """A raw GET whose response is left unread."""
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def rows(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The table's rows (without its header and the verdict line)."""
    lines = result.stdout.splitlines()
    assert lines and lines[0].startswith("HOST"), result.stdout + result.stderr
    return lines[1:-1]


@pytest.mark.parametrize("server", REPORTED_ON)
def test_the_view_that_swallows_the_disconnect_is_named(server: str, tmp_path: Path) -> None:
    """The seed's case (on Daphne, which would say 'Application instance … took too long
    to shut down' about Django's handler): the view, the line and why."""
    graceful = settings(tmp_path, CANCEL_TIMEOUT=1.0)
    with running(server, graceful=graceful) as srv:
        sock = open_get(srv, "/hangs/swallower/")
        (began,) = srv.wait_event("swallower-begin")
        hung_up = time.monotonic()
        sock.close()
        srv.wait_event("swallower-swallowed")
        early = checkshutdown(srv)
        if time.monotonic() < hung_up + graceful["CANCEL_TIMEOUT"]:
            assert early.returncode == 0, early.stdout  # told just now: it may still unwind

        bound = graceful["CANCEL_TIMEOUT"] + graceful["HEARTBEAT"] + 1
        time.sleep(max(0.0, hung_up + bound - time.monotonic()))
        result = checkshutdown(srv)

    assert result.returncode == 1, result.stdout + result.stderr
    (row,) = rows(result)
    assert f"{SWALLOWER} (GET /hangs/swallower/)" in row
    assert "swallowed-cancel" in row and "cancelled 1x" in row
    assert row.rstrip().endswith(f"{marked(VIEWS, '# hang: swallow-loop')} in swallower")
    assert f" {began['pid']} " in row and " live " in row  # the worker's pid
    assert result.stdout.splitlines()[-1].startswith("1 problem: 1 swallowed-cancel")


def test_uvicorn_workers_each_report_their_own_hung_request(tmp_path: Path) -> None:
    with running("uvicorn", graceful=settings(tmp_path), workers=2) as srv:
        socks, pids = [], set()
        for n in range(1, 41):
            socks.append(open_get(srv, f"/hangs/swallower/?n={n}"))
            began = srv.wait_event("swallower-begin", count=n)
            pids = {event["pid"] for event in began}
            if len(pids) == 2:
                break
        assert len(pids) == 2, "every request went to the same worker"
        # located from 1 s of age (LOCATE_AFTER), written within a heartbeat (0.5 s)
        time.sleep(1.0 + 0.5 + 0.3)
        as_json = checkshutdown(srv, "--json", "--threshold", "1")
        as_table = checkshutdown(srv, "--threshold", "1")
        for sock in socks:
            sock.close()

    assert as_json.returncode == 1, as_json.stdout + as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["status"] == 1
    assert {row["pid"] for row in data["rows"]} == pids
    assert {w["pid"] for w in data["workers"]} == pids
    assert len(data["rows"]) == len(socks)
    where = f"{marked(VIEWS, '# hang: swallow-loop')} in swallower"
    for row in data["rows"]:
        assert (row["view"], row["what"], row["hang"]) == (
            SWALLOWER,
            "GET /hangs/swallower/",
            "slow",
        )
        assert (row["kind"], row["source"], row["server"]) == ("request", "live", "uvicorn")
        assert row["location"] == where and row["where"]["function"] == "swallower"
        assert row["where"]["file"] == str(VIEWS.resolve())
    table_rows = rows(as_table)
    assert sorted(int(line.split()[1]) for line in table_rows) == sorted(
        row["pid"] for row in data["rows"]
    )
    assert all(line.rstrip().endswith(where) and " slow " in line for line in table_rows)


def test_a_frozen_loop_is_reported_while_it_is_frozen(tmp_path: Path) -> None:
    with running("uvicorn", graceful=settings(tmp_path)) as srv:
        response = in_background(srv.get, "/hangs/frozen/?s=5", 20)
        srv.wait_event("frozen-begin")
        frozen_at = time.monotonic()
        time.sleep(1.5)  # the loop has not answered for more than 1 s
        result = checkshutdown(srv)
        checked_at = time.monotonic()
        still_frozen = not response.done()
        assert response.result(20).status_code == 200

    assert still_frozen and checked_at < frozen_at + 5
    assert result.returncode == 1, result.stdout + result.stderr
    (row,) = rows(result)
    assert "tests.project.views_hangs.frozen (GET /hangs/frozen/)" in row and "blocked-loop" in row
    assert row.rstrip().endswith(f"{marked(VIEWS, '# hang: frozen-sleep')} in frozen")


def test_a_sync_view_that_runs_on_is_a_sync_thread_with_its_line(tmp_path: Path) -> None:
    with running("uvicorn", graceful=settings(tmp_path)) as srv:
        response = in_background(srv.get, "/hangs/busy/?s=4", 20)
        srv.wait_event("busy-begin")
        time.sleep(1.5)
        result = checkshutdown(srv, "--threshold", "1")
        assert response.result(20).status_code == 200

    assert result.returncode == 1, result.stdout + result.stderr
    (row,) = rows(result)
    assert "tests.project.views_hangs.busy (GET /hangs/busy/)" in row and "sync-thread" in row
    assert row.rstrip().endswith(f"{marked(VIEWS, '# hang: busy-loop')} in busy")


@pytest.mark.parametrize("server", REPORTED_ON)
def test_a_sync_view_the_client_left_is_a_sync_thread_with_its_line(
    server: str, tmp_path: Path
) -> None:
    """Cancelled by the disconnect, asgiref lets the view's task go while its thread runs
    on (and Django's handler waits behind it, or has ended): still the view's thread and
    line, not a swallowed cancel somewhere in Django, live and in the last report."""
    graceful = settings(tmp_path, CANCEL_TIMEOUT=1.0, GRACE_PERIOD=0.5)
    with running(server, graceful=graceful) as srv:
        sock = open_get(srv, "/hangs/busy/?s=8")
        srv.wait_event("busy-begin")
        sock.close()
        time.sleep(graceful["CANCEL_TIMEOUT"] + graceful["HEARTBEAT"] + 1)
        live = checkshutdown(srv, "--live")
        srv.signal(signal.SIGTERM)
        srv.wait_exit(10)
        last = checkshutdown(srv, "--last")

    line = f"{marked(VIEWS, '# hang: busy-loop')} in busy"
    for result in (live, last):
        assert result.returncode == 1, result.stdout + result.stderr
        (row,) = rows(result)
        assert "tests.project.views_hangs.busy (GET /hangs/busy/)" in row and "sync-thread" in row
        assert row.rstrip().endswith(line)
    assert "cancelled 1x" in rows(live)[0]


def test_the_last_shutdown_report_outlives_the_process(tmp_path: Path) -> None:
    """SIGTERM with a view that swallows the cancel and a thread that ignores its stop:
    after the process is gone, --last lists both, with their lines. The files are private
    and hold no query string."""
    graceful = settings(tmp_path, GRACE_PERIOD=0.5, CANCEL_TIMEOUT=0.5)
    folder = tmp_path / "state"
    with running("uvicorn", graceful=graceful) as srv:
        assert srv.get("/hangs/stuck-thread/").status_code == 200
        sock = open_get(srv, "/hangs/swallower/?token=hunter2")
        srv.wait_event("swallower-begin")
        time.sleep(0.6)  # a heartbeat with the request in it
        (live,) = folder.glob("live-*.json")
        live_text = live.read_text()
        live_mode = stat.S_IMODE(live.stat().st_mode)
        srv.signal(signal.SIGTERM)
        srv.wait_exit(15)
        sock.close()
        pid = srv.proc.pid

    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and live_mode == 0o600
    assert "/hangs/swallower/" in live_text and "hunter2" not in live_text
    (last,) = folder.iterdir()  # the live snapshot went at STOPPED; the last report stays
    assert last.name.startswith("last-") and stat.S_IMODE(last.stat().st_mode) == 0o600
    assert "hunter2" not in last.read_text()

    result = checkshutdown(srv, "--last")
    assert result.returncode == 1, result.stdout + result.stderr
    found = rows(result)
    assert len(found) == 2
    view = next(line for line in found if SWALLOWER in line)
    assert "swallowed-cancel" in view and f" {pid} " in view and " last " in view
    assert view.rstrip().endswith(f"{marked(VIEWS, '# hang: swallow-loop')} in swallower")
    thread = next(line for line in found if "ignores-stop" in line)
    assert "stuck-thread" in thread and " thread " in thread
    assert thread.rstrip().endswith(f"{marked(VIEWS, '# hang: stuck-thread')} in _ignores_stop")

    data = json.loads(checkshutdown(srv, "--last", "--json").stdout)
    assert {(r["kind"], r["hang"], r["source"]) for r in data["rows"]} == {
        ("request", "swallowed-cancel", "last"),
        ("thread", "stuck-thread", "last"),
    }
    assert checkshutdown(srv).returncode == 1  # the default also shows last reports
    live_only = checkshutdown(srv, "--live")
    assert live_only.returncode == 2 and "no live workers" in live_only.stdout


REDIS = "redis://127.0.0.1:6379/0"


def redis_listening() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.3):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not redis_listening(), reason="no Redis at 127.0.0.1:6379")
def test_two_hosts_report_to_one_redis_cache() -> None:
    """STATE_BACKEND "cache": two servers with different host ids, one report."""
    import redis

    prefix = f"graceful-test-{uuid.uuid4().hex[:8]}"
    env = {"GRACEFUL_TEST_CACHE": REDIS, "GRACEFUL_TEST_CACHE_PREFIX": prefix}
    graceful = {"STATE_BACKEND": "cache", "STATE_CACHE": "state", "HEARTBEAT": 0.5}
    try:
        with (
            running("uvicorn", graceful=graceful, env={**env, "GRACEFUL_HOST_ID": "host-a"}) as a,
            running("uvicorn", graceful=graceful, env={**env, "GRACEFUL_HOST_ID": "host-b"}) as b,
        ):
            socks = [open_get(srv, "/hangs/swallower/") for srv in (a, b)]
            for srv in (a, b):
                srv.wait_event("swallower-begin")
            time.sleep(1.0 + 0.5 + 0.3)  # located (1 s old), then written (a heartbeat)
            ops = {"GRACEFUL_HOST_ID": "ops"}  # a third host reads both
            result = checkshutdown(a, "--json", "--threshold", "1", env=ops)
            for sock in socks:
                sock.close()
    finally:
        client = redis.Redis.from_url(REDIS)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)

    assert result.returncode == 1, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["store"] == "cache 'state'"
    assert {(row["host"], row["pid"]) for row in data["rows"]} == {
        ("host-a", a.proc.pid),
        ("host-b", b.proc.pid),
    }
    where = f"{marked(VIEWS, '# hang: swallow-loop')} in swallower"
    assert all(row["location"] == where and row["view"] == SWALLOWER for row in data["rows"])
    assert {(w["host"], w["source"]) for w in data["workers"]} == {
        ("host-a", "live"),
        ("host-b", "live"),
    }
