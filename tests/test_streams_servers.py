"""Endless streams on every real server: an open event stream at SIGTERM gets its last
chunk and a terminated body when CLOSING begins, and the server exits without waiting out
the grace or logging an unfinished response."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx
import pytest

from .servers import SERVERS, Server, in_background, running

pytestmark = pytest.mark.server

CHANNELS_APP = "tests.project.asgi_channels:application"
#: The default grace: an open stream must not make the server wait it out.
GRACE = 20
SSE_LAST = b"event: restart\ndata: \nretry: 1000\n\n"
#: What the servers log for a response an app left unfinished, or an app that raised.
ERROR_LINES = (
    "returned without completing",  # Uvicorn (and Gunicorn's Uvicorn worker)
    "Exception in ASGI application",  # Uvicorn
    "Traceback",
    "ASGI callable",
    "Error in ASGI Framework",  # Hypercorn
    "Application exception",  # Granian
    "took too long to shut down",  # Daphne
)


@dataclass
class Read:
    """What an event-stream client read: its chunks, and how the stream ended."""

    chunks: list[bytes] = field(default_factory=list)
    complete: bool = False  # the chunked body was terminated (not cut off)
    error: str | None = None
    ended_at: float | None = None


def read_stream(srv: Server, path: str) -> Read:
    read = Read()
    try:
        with srv.client(timeout=30) as client, client.stream("GET", path) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for chunk in response.iter_raw():
                read.chunks.append(chunk)
        read.complete = True
    except httpx.HTTPError as exc:
        read.error = repr(exc)
    read.ended_at = time.monotonic()
    return read


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize(
    ("app", "path", "last"),
    [
        pytest.param(None, "/stream/?kind=sse-last&tick=0.2", SSE_LAST, id="django-view"),
        pytest.param(CHANNELS_APP, "/consumer/events/?tick=0.2", None, id="channels-consumer"),
    ],
)
def test_an_open_event_stream_ends_at_closing_with_its_last_chunk(
    server: str, app: str | None, path: str, last: bytes | None
) -> None:
    kwargs = {"app": app} if app else {}
    with running(server, graceful={"GRACE_PERIOD": GRACE, "CANCEL_TIMEOUT": 1}, **kwargs) as srv:
        stream = in_background(read_stream, srv, path)
        srv.wait_event("stream-open")
        srv.wait_engaged()  # Daphne sends no lifespan: its first request starts us
        time.sleep(0.5)  # a few ticks out
        srv.signal()
        srv.wait_exit(GRACE)
        read = stream.result(timeout=10)
        log = srv.log()
        assert read.complete, (read, log)  # the chunked body was terminated
        body = b"".join(read.chunks)
        assert body.startswith(b"data: 0\n\n"), body
        if last is not None:
            assert body.endswith(last), body
        assert srv.exit_after < GRACE / 2, log  # ended at CLOSING, not after the grace
        assert not [line for line in log.splitlines() if any(e in line for e in ERROR_LINES)], log
        assert "hung at shutdown" not in log
        closed = srv.wait_event("stream-closed", timeout=1)  # the stream's finally ran
        if app is None:
            assert closed[0]["reason"] == "shutdown"


@pytest.mark.parametrize("server", SERVERS)
def test_an_event_source_asking_during_closing_is_told_to_come_back(server: str) -> None:
    """While a stream opted out holds the grace, an EventSource's request gets a 200 event
    stream with ``retry:`` (a 503 would end it for good), a plain request the 503."""
    with running(server, graceful={"GRACE_PERIOD": 5, "CANCEL_TIMEOUT": 1}) as srv:
        held = in_background(read_stream, srv, "/stream/?kind=sse-kept&tick=0.2")
        srv.wait_event("stream-open")
        srv.wait_engaged()
        srv.signal()
        deadline = time.monotonic() + 4
        while (status := srv.get("/pid/", timeout=5).status_code) != 503:
            assert time.monotonic() < deadline, f"no 503 while CLOSING: {status}\n{srv.log()}"
            time.sleep(0.05)
        with srv.client(timeout=5) as client:
            again = client.get("/stream/", headers={"Accept": "text/event-stream"})
        assert again.status_code == 200, (again, srv.log())
        assert again.headers["content-type"] == "text/event-stream"
        assert again.content == b": shutting down\nretry: 1000\n\n"
        srv.wait_exit(15)
        held.result(timeout=10)
