"""Development servers on the real server: ``uvicorn --reload`` and ``granian --reload``.

A reload stops the old worker (its shutdown hooks run) and starts the next one; a request
sent meanwhile is served by the next one (200, not a 503 from the old one, not a reset);
the log says nothing about the listening sockets above INFO. How long a reload takes is
bench/reload.py's business.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import httpx
import pytest

from .servers import Server, answered, get_or_error, in_background, start_with
from .test_streams_servers import SSE_LAST, read_stream

#: The server kinds with a reloader, and its flags (``{dir}``: the folder it watches).
RELOAD_FLAGS = {
    "uvicorn": ["--reload", "--reload-dir", "{dir}"],
    "granian": ["--reload", "--reload-paths", "{dir}"],
    "granian-rsgi": ["--reload", "--reload-paths", "{dir}"],
}
RELOADERS = pytest.mark.parametrize("server", list(RELOAD_FLAGS))
SERVER = pytest.mark.server
#: Seconds for a worker to start (a spawned uvicorn worker imports the project anew).
START = 30


def reloading(
    server: str, tmp_path: Path, graceful: dict[str, float] | None = None
) -> tuple[Server, Path]:
    """``server --reload`` watching a folder of its own; the file to touch."""
    if server.startswith("granian") and importlib.util.find_spec("watchfiles") is None:
        pytest.skip(
            "granian --reload needs watchfiles: pip install 'django-graceful-asgi[granian]'"
        )
    watched = tmp_path / "watched"
    watched.mkdir()
    module = watched / "module.py"
    module.write_text("VALUE = 1\n")
    flags = [flag.format(dir=watched) for flag in RELOAD_FLAGS[server]]
    srv = start_with(Server(server, graceful=graceful or {}), *flags)
    srv.wait_event("startup", timeout=START)
    return srv, module


def touch(module: Path) -> None:
    module.write_text(module.read_text() + "VALUE += 1\n")


def pid_of(srv: Server, timeout: float = 10) -> int:
    """The pid of the worker that answers; a refused connect is tried again within
    ``timeout`` s (Granian's next worker listens only after its startup hooks ran)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = srv.get("/pid/", timeout=timeout)
        except httpx.ConnectError:
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.05)
            continue
        assert response.status_code == 200, srv.log()
        return int(response.json()["pid"])


def quiet_about_sockets(log: str) -> None:
    """Nothing above INFO from django_graceful, and no door found shut."""
    assert "came shut" not in log, log
    loud = [
        line
        for line in log.splitlines()
        if "django_graceful" in line and ("WARNING" in line or "ERROR" in line)
    ]
    assert loud == [], log


@SERVER
@RELOADERS
def test_a_reload_runs_the_old_workers_shutdown_hooks_and_the_next_one_serves(
    server: str, tmp_path: Path
) -> None:
    srv, module = reloading(server, tmp_path)
    try:
        old = pid_of(srv)
        touch(module)
        srv.wait_event("startup", count=2, timeout=START)
        assert [e["pid"] for e in srv.events("shutdown")] == [old], srv.log()
        new = pid_of(srv)
        assert new != old and new == srv.events("startup")[-1]["pid"], srv.log()
        quiet_about_sockets(srv.log())
    finally:
        srv.kill()


@SERVER
@RELOADERS
def test_a_request_sent_during_a_reload_is_not_refused_by_the_old_worker(
    server: str, tmp_path: Path
) -> None:
    """The old worker drains a request in flight; one sent meanwhile gets no 503 from it.
    Uvicorn's reloader keeps the listening socket: the request waits in its backlog and the
    next worker serves it. Granian's worker binds a socket of its own (Linux): the door
    drops the request's SYN until the old worker is gone and the client tries again; if
    that try falls between the old worker's exit and the next one's listen, the connection
    is refused, as it is without django_graceful."""
    srv, module = reloading(server, tmp_path)
    try:
        old = pid_of(srv)
        in_flight = in_background(get_or_error, srv, "/slow/?s=1.5")
        srv.wait_event("slow-begin")
        touch(module)
        srv.wait_event("shutdown-started")
        during = in_background(get_or_error, srv, "/pid/")
        answered(in_flight, 200, srv.log(), timeout=START)
        srv.wait_event("startup", count=2, timeout=START)
        result = during.result(timeout=START)
        log = srv.log()
        if server == "uvicorn" or not isinstance(result, httpx.ConnectError):
            assert isinstance(result, httpx.Response), (result, log)
            assert result.status_code == 200 and result.json()["pid"] != old, (result, log)
        assert [e["pid"] for e in srv.events("shutdown")] == [old], log
        quiet_about_sockets(log)
    finally:
        srv.kill()


@SERVER
@RELOADERS
def test_an_open_event_stream_ends_with_its_last_chunk_at_a_reload_not_after_the_grace(
    server: str, tmp_path: Path
) -> None:
    """A browser tab with an EventSource open does not hold every save's reload for the
    grace: the stream gets its ``retry:`` chunk and a terminated body at once, and the
    old worker's shutdown ends well within its 20 s grace."""
    grace = 20.0
    srv, module = reloading(server, tmp_path, {"GRACE_PERIOD": grace, "CANCEL_TIMEOUT": 1})
    try:
        old = pid_of(srv)
        stream = in_background(read_stream, srv, "/stream/?kind=sse-last&tick=0.2")
        srv.wait_event("stream-open")
        touch(module)
        (began,) = srv.wait_event("shutdown-started")
        read = stream.result(timeout=grace / 2)
        srv.wait_event("startup", count=2, timeout=START)
        log = srv.log()
        assert read.complete and b"".join(read.chunks).endswith(SSE_LAST), (read, log)
        (ended,) = srv.events("shutdown")
        assert ended["pid"] == began["pid"] == old
        assert ended["t"] - began["t"] < grace / 4, log  # ended at CLOSING, not the grace
        assert pid_of(srv) != old
        quiet_about_sockets(log)
    finally:
        srv.kill()
