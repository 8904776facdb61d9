"""Endless streams, in-process: which responses are ended when CLOSING begins, and how
(the last chunk, the end of the body, the app's disconnect), message by message."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import re_path

from django_graceful import endless
from django_graceful._core.lifecycle import Lifecycle
from django_graceful._core.phases import Phase
from django_graceful._serving.handler import GracefulASGIHandler
from django_graceful._serving.protocol import EVENT_STREAM_RETRY
from django_graceful.asgi import GracefulASGI
from tests.project.routing import http_urlpatterns

from .inprocess import (
    NO_SIGNALS,
    Events,
    http_scope,
    open_request,
    request,
    start,
    stop,
    wait_for,
)

#: A grace no test waits out: a stream that holds the shutdown fails ``stop()``'s bound.
LONG_GRACE = {**NO_SIGNALS, "GRACE_PERIOD": 20, "CANCEL_TIMEOUT": 1}
END: dict[str, Any] = {"type": "http.response.body", "body": b"", "more_body": False}
SSE_LAST = b"event: restart\ndata: \nretry: 1000\n\n"


@pytest.fixture
def channels_app(lifecycle: Lifecycle) -> GracefulASGI:
    """The test project behind a Channels router, as asgi_channels.py serves it: its HTTP
    consumers first, then Django's own handler (not GracefulASGIHandler)."""
    http = URLRouter([*http_urlpatterns, re_path(r"", ASGIHandler())])
    return GracefulASGI(ProtocolTypeRouter({"http": http}), lifecycle=lifecycle)


async def streaming(app: GracefulASGI, path: str) -> ApplicationCommunicator:
    """A request whose stream has begun: its head and a first chunk were sent."""
    comm = await open_request(app, path)
    assert (await comm.receive_output(2))["type"] == "http.response.start"
    assert (await comm.receive_output(2))["more_body"] is True
    return comm


async def bodies_to_the_end(comm: ApplicationCommunicator, timeout: float = 3) -> list[Any]:
    """The body messages the client gets, up to the one that ends the body."""
    bodies = []
    while True:
        message = await comm.receive_output(timeout)
        assert message["type"] == "http.response.body", message
        bodies.append(message)
        if not message.get("more_body", False):
            return bodies


@pytest.mark.parametrize(
    ("path", "last"),
    [
        pytest.param("/stream/?kind=sse", None, id="sse-unmarked"),
        pytest.param("/stream/?kind=sse-last", SSE_LAST, id="sse-with-a-last-chunk"),
        pytest.param("/stream/?kind=ndjson-endless", b'{"end": true}\n', id="ndjson-marked"),
    ],
)
async def test_an_endless_stream_ends_when_closing_begins_with_its_last_chunk(
    app: GracefulASGI, recorded: Events, settings: Any, path: str, last: bytes | None
) -> None:
    settings.GRACEFUL = LONG_GRACE
    lifespan, _ = await start(app)
    comm = await streaming(app, path)
    app.lifecycle.begin_shutdown("test")
    bodies = await bodies_to_the_end(comm)  # within 3 s: not after the 20 s grace
    assert bodies[-1] == END
    ticks = bodies[:-2] if last is not None else bodies[:-1]
    if last is not None:
        assert bodies[-2] == {"type": "http.response.body", "body": last, "more_body": True}
    assert all(b["more_body"] and b["body"] != last for b in ticks)
    await comm.wait(2)  # the app returned, without an error
    assert len(app.lifecycle.registry) == 0  # the request is over
    closed = await wait_for(recorded, "stream-closed")
    assert closed["reason"] == "shutdown"  # the generator's finally ran, told why
    await stop(lifespan, 3)  # the grace was not waited out


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("sse-kept", id="sse-opted-out"),
        pytest.param("ndjson", id="other-stream-unmarked"),
    ],
)
async def test_a_stream_not_endless_streams_on_through_the_grace(
    app: GracefulASGI, recorded: Events, settings: Any, kind: str
) -> None:
    settings.GRACEFUL = {**NO_SIGNALS, "GRACE_PERIOD": 0.5, "CANCEL_TIMEOUT": 1}
    lifespan, _ = await start(app)
    comm = await streaming(app, f"/stream/?kind={kind}")
    app.lifecycle.begin_shutdown("test")
    await in_phase(app.lifecycle, Phase.CLOSING)
    drain(comm)
    for _ in range(3):  # the stream goes on during CLOSING
        message = await comm.receive_output(2)
        assert message["type"] == "http.response.body" and message["more_body"], message
    await stop(lifespan, 3)  # ended by the cancel after the grace, as any request in flight
    closed = await wait_for(recorded, "stream-closed")
    assert closed["reason"] == "shutdown"


def drain(comm: ApplicationCommunicator) -> None:
    """Drop what the app has sent so far."""
    while not comm.output_queue.empty():
        comm.output_queue.get_nowait()


async def in_phase(lifecycle: Lifecycle, phase: Phase, timeout: float = 2) -> None:
    """Until the shutdown has reached ``phase`` (bounded)."""
    reached = asyncio.Event()
    lifecycle.on_phase(lambda now: reached.set() if now >= phase else None, this_cycle=True)
    if lifecycle.phase < phase:
        await asyncio.wait_for(reached.wait(), timeout)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/consumer/events/", id="channels-async-http-consumer"),
        pytest.param("/stream/?kind=sse-last", id="django-asgi-handler-behind-a-router"),
    ],
)
async def test_a_stream_of_an_app_behind_a_router_ends_too(
    channels_app: GracefulASGI, recorded: Events, settings: Any, path: str
) -> None:
    settings.GRACEFUL = LONG_GRACE
    lifespan, _ = await start(channels_app)
    comm = await streaming(channels_app, path)
    channels_app.lifecycle.begin_shutdown("test")
    bodies = await bodies_to_the_end(comm)
    assert bodies[-1] == END
    await comm.wait(2)  # the consumer returned (its next send raised StreamEnded, taken)
    await wait_for(recorded, "stream-closed")
    await stop(lifespan, 3)


async def test_the_end_waits_for_the_apps_body_message_in_flight(
    lifecycle: Lifecycle, recorded: Events, settings: Any
) -> None:
    """One body message at a time: a server whose ``send`` of a chunk is still under way
    (a slow client) when CLOSING begins gets the last chunk and the end after it."""
    settings.GRACEFUL = LONG_GRACE
    app = GracefulASGI(GracefulASGIHandler(), lifecycle=lifecycle)
    lifespan, _ = await start(app)
    sent: list[Any] = []
    in_send = asyncio.Event()
    release = asyncio.Event()
    requests = asyncio.Queue[Any]()
    await requests.put({"type": "http.request", "body": b""})

    async def receive() -> Any:
        return await requests.get()

    async def send(message: Any) -> None:
        if message.get("more_body") and len(sent) == 2:  # the third message: a tick
            in_send.set()
            await release.wait()
        sent.append(message)

    task = asyncio.ensure_future(
        app(http_scope("/stream/", query_string=b"kind=sse-last"), receive, send)
    )
    await asyncio.wait_for(in_send.wait(), 2)
    lifecycle.begin_shutdown("test")
    await in_phase(lifecycle, Phase.CLOSING)
    await asyncio.sleep(0.1)
    assert len(sent) == 2  # nothing overtook the chunk on its way
    release.set()
    await asyncio.wait_for(task, 2)
    assert sent[-3]["body"] == b"data: 1\n\n"
    assert sent[-2:] == [{"type": "http.response.body", "body": SSE_LAST, "more_body": True}, END]
    await stop(lifespan, 3)


async def test_a_stream_whose_head_goes_out_during_closing_is_ended_after_it(
    app: GracefulASGI, recorded: Events, settings: Any
) -> None:
    """A view in flight when CLOSING begins answers with an endless stream: its head goes
    out, then its last chunk and the end, and none of its ticks."""
    settings.GRACEFUL = LONG_GRACE
    lifespan, _ = await start(app)
    comm = await open_request(app, "/stream/?kind=sse-last&wait=0.3")
    app.lifecycle.begin_shutdown("test")
    start_message = await comm.receive_output(2)
    assert start_message["type"] == "http.response.start"
    assert (b"connection", b"close") in start_message["headers"]  # it began in CLOSING
    assert await bodies_to_the_end(comm) == [
        {"type": "http.response.body", "body": SSE_LAST, "more_body": True},
        END,
    ]
    await comm.wait(2)
    assert (await wait_for(recorded, "stream-closed"))["reason"] == "shutdown"
    await stop(lifespan, 3)


async def test_an_event_source_asking_during_closing_is_told_to_come_back_not_refused(
    app: GracefulASGI, settings: Any
) -> None:
    """An EventSource gives up for good on any answer but 200 (a 503 "fails the
    connection"): one that reconnects while this process is still CLOSING (its stream was
    just ended, another request holds the grace) gets an event stream that only sets its
    ``retry:`` and ends, closing the connection: it comes back, to a sibling or the next
    process. Any other request still gets the 503."""
    settings.GRACEFUL = {**NO_SIGNALS, "GRACE_PERIOD": 0.5, "CANCEL_TIMEOUT": 1}
    lifespan, _ = await start(app)
    held = await streaming(app, "/stream/?kind=sse-kept")  # holds CLOSING open
    app.lifecycle.begin_shutdown("test")
    await in_phase(app.lifecycle, Phase.CLOSING)
    accept = [(b"host", b"testserver"), (b"accept", b"text/event-stream")]
    again = ApplicationCommunicator(app, http_scope("/stream/", headers=accept))
    await again.send_input({"type": "http.request", "body": b""})
    head = await again.receive_output(2)
    headers = dict(head["headers"])
    assert head["status"] == 200, head
    assert headers[b"content-type"] == b"text/event-stream"
    assert headers[b"connection"] == b"close"
    body = await again.receive_output(2)
    assert body["body"] == EVENT_STREAM_RETRY and not body.get("more_body", False)
    await again.wait(2)
    assert (await request(app, "/pid/"))[0] == 503
    await stop(lifespan, 5)
    await held.wait(2)


# -- endless() -------------------------------------------------------------------------


def test_endless_returns_the_response_and_does_nothing_outside_a_request() -> None:
    response = StreamingHttpResponse(iter([b"x"]))
    assert endless(response, last="retry: 1000\n\n") is response
    assert endless(response, False) is response


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        pytest.param((HttpResponse("x"),), {}, id="not-a-stream"),
        pytest.param((StreamingHttpResponse(), False), {"last": b"x"}, id="opted-out-with-last"),
        pytest.param((StreamingHttpResponse(),), {"last": 7}, id="last-not-bytes"),
    ],
)
def test_endless_refuses_what_it_cannot_mean(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        endless(*args, **kwargs)


pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
