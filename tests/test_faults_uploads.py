"""Under faults: an upload still arriving at SIGTERM gets a whole answer.

A POST whose body is still on its way when the stop begins is work in flight on every
server: its view answers when the body is in, within the grace. Daphne reads a whole body
before it calls the app; it is served all the same.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .servers import SERVERS, Server, answered, in_background, start_with

#: The upload: 2 MB, of which only the first bytes are sent before the signal.
BODY = b"u" * 2_000_000
CHUNK = 100_000
#: Seconds the rest of the body takes to arrive after the signal (within the grace).
UPLOAD_SECONDS = 1.0
GRACEFUL = {"GRACE_PERIOD": 5, "CANCEL_TIMEOUT": 1}


def upload(srv: Server, begun: threading.Event, go_on: threading.Event) -> Any:
    """POST ``BODY``: its headers and first bytes at once (then ``begun`` is set), the
    rest once ``go_on`` is set, over ``UPLOAD_SECONDS``; the response, or the client-side
    error."""

    def body() -> Iterator[bytes]:
        yield BODY[:10]
        begun.set()  # httpx asks for more once it has sent the headers and those bytes
        assert go_on.wait(10)
        for start in range(10, len(BODY), CHUNK):
            yield BODY[start : start + CHUNK]
            time.sleep(UPLOAD_SECONDS * CHUNK / len(BODY))

    headers = {"content-length": str(len(BODY))}
    try:
        with srv.client(timeout=20) as client:
            return client.post("/pid/", content=body(), headers=headers)
    except httpx.HTTPError as exc:
        return exc


@pytest.mark.server
@pytest.mark.parametrize("server", SERVERS)
def test_an_upload_arriving_at_sigterm_is_served_when_it_ends_within_the_grace(
    server: str,
) -> None:
    srv = start_with(Server(server, graceful=GRACEFUL))
    begun, go_on = threading.Event(), threading.Event()
    try:
        response = in_background(upload, srv, begun, go_on)
        assert begun.wait(10)
        # A request on a second connection, answered: the server (one worker) has read the
        # upload's headers by now, and (but for Daphne) handed its scope to the app.
        srv.get("/pid/")
        srv.signal()
        srv.wait_event("shutdown-started")
        go_on.set()
        assert answered(response, 200, srv.log(), timeout=15).json()["pid"]
        assert srv.wait_exit(15) in (0, -15), srv.log()
    finally:
        go_on.set()
        srv.kill()
