"""Driving GracefulASGI in-process, message by message, with asgiref's ApplicationCommunicator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from asgiref.testing import ApplicationCommunicator

from django_graceful.asgi import GracefulASGI
from tests.project import views_hangs

NO_SIGNALS = {"HANDLE_SIGNALS": False, "LIFESPAN": ["tests.project.lifespan.resources"]}

Events = Callable[[str], list[dict[str, Any]]]


def http_scope(path: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": extra.pop("query_string", b""),
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 5000),
        **extra,
    }


async def start(app: GracefulASGI) -> tuple[ApplicationCommunicator, dict[str, Any]]:
    """Run the lifespan startup; the communicator (for the shutdown) and the state."""
    state: dict[str, Any] = {}
    lifespan = ApplicationCommunicator(app, {"type": "lifespan", "state": state})
    await lifespan.send_input({"type": "lifespan.startup"})
    assert await lifespan.receive_output(5) == {"type": "lifespan.startup.complete"}
    return lifespan, state


async def stop(lifespan: ApplicationCommunicator, timeout: float = 5) -> None:
    """Run the lifespan shutdown (``start``'s communicator) to its end, within ``timeout``."""
    await lifespan.send_input({"type": "lifespan.shutdown"})
    assert await lifespan.receive_output(timeout) == {"type": "lifespan.shutdown.complete"}


async def release_the_swallower(comm: ApplicationCommunicator) -> None:
    """Let the view of tests/project/views_hangs.py that swallows every cancel return, and
    its request (``comm``) end."""
    views_hangs.RELEASE.set()
    try:
        await comm.receive_output(5)
        await comm.wait(5)
    finally:
        views_hangs.RELEASE.clear()


async def open_request(app: GracefulASGI, path: str) -> ApplicationCommunicator:
    """A GET whose body has been sent; the response is for the caller to read."""
    path, _, query = path.partition("?")
    comm = ApplicationCommunicator(app, http_scope(path, query_string=query.encode()))
    await comm.send_input({"type": "http.request", "body": b""})
    return comm


async def request(app: GracefulASGI, path: str, timeout: float = 5) -> tuple[int, dict, bytes]:
    """A whole GET: status, headers (a dict) and body, once the app has ended, as a
    server waits for it (its ``request_finished`` receivers have run)."""
    comm = await open_request(app, path)
    start_message = await comm.receive_output(timeout)
    body = await comm.receive_output(timeout)
    await comm.wait(timeout)
    return start_message["status"], dict(start_message["headers"]), body["body"]


async def wait_for(events: Events, name: str, timeout: float = 3) -> dict[str, Any]:
    """The first event called ``name``, waiting up to ``timeout`` s for it."""
    deadline = time.monotonic() + timeout
    while not events(name):
        assert time.monotonic() < deadline, f"no {name!r} event within {timeout} s"
        await asyncio.sleep(0.01)
    return events(name)[0]
