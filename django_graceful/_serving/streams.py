"""Endless streams at shutdown: a response that streams with no end in sight (server-sent
events, a long poll, an NDJSON feed) is ended when CLOSING begins, not streamed through
the grace period.

Which: every ``text/event-stream`` response, and any other streaming response whose view
marks it with :func:`endless`; ``endless(response, False)`` opts one out (it then runs
through the grace like any request in flight). The content type is read from the
``http.response.start`` message, so a stream of any ASGI app behind GracefulASGI (a
Channels ``AsyncHttpConsumer``) is ended too.

How (``connection.TrackingSend`` ends it): once the app's body message in flight, if any,
has been taken, the client gets the stream's last chunk (the view's ``last``, or none)
and the end of the body (``http.response.body`` with ``more_body: False``): a complete
response, which an ``EventSource`` follows with a reconnect. Then the app hears what it
hears when its client closes the stream: ``http.disconnect`` (the request's token says
``SHUTDOWN``). Django's handler then cancels the task that iterates the stream and
closes the response (its generator's ``finally`` runs, ``request_finished`` is sent), as
for any client that left. An app that streams on instead (a consumer looping in
``handle()`` reads no message while it runs) has its chunks dropped, and its first chunk
``UNHEARD_DISCONNECT`` s after the end raises :class:`StreamEnded`, which GracefulASGI
takes as the request's end.

Why the disconnect, not ``aclose()``: at the ASGI level there is no generator to close,
only messages; and a generator suspended in its own ``await`` (between two events) cannot
be closed from outside, only cancelled there. Django's disconnect handling does exactly
that, and also closes the response (``request_finished``, database connections), which a
cancel of the request's task skips (and on Django 5.2 and 6.0 never reaches the stream).

An ``EventSource`` that reconnects while this process is still CLOSING is answered with
a ``retry:`` (``protocol.retry_event_stream``), not the 503 that would end it for good.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from .._core.registry import TrackedRequest, current_item

if TYPE_CHECKING:
    from django.http import StreamingHttpResponse

_Response = TypeVar("_Response", bound="StreamingHttpResponse")

#: The media type that is endless unless its view says otherwise.
EVENT_STREAM = b"text/event-stream"

#: For how long after its stream's end is out an app's chunks are dropped quietly: its
#: disconnect, or the cancel its own disconnect handling brings, is on the way (Django's
#: handler cancels the task that iterates the stream a loop turn or two after
#: ``http.disconnect``). A chunk later than that raises :class:`StreamEnded`: the app
#: does not listen while it streams (a Channels consumer looping in ``handle()``).
UNHEARD_DISCONNECT = 0.25


class StreamEnded(OSError):
    """Raised by ``send()`` to an app that sends on after its endless stream was ended at
    CLOSING: its client has a complete response already. An ``OSError``, as ASGI servers
    raise for a connection that is gone; GracefulASGI takes it as the request's end."""


def endless(response: _Response, enabled: bool = True, /, *, last: bytes | str = b"") -> _Response:
    """Mark a streaming response as endless: it is ended when the shutdown's CLOSING
    phase begins, in production stops and dev-server reloads alike, instead of streaming
    through the grace period. Returns the response.

    ``last``: the stream's final chunk, sent just before its end (a ``str`` is encoded
    with the response's charset); for server-sent events, e.g.
    ``"event: restart\\ndata: \\nretry: 1000\\n\\n"``, so that the ``EventSource``
    reconnects within a second, to a sibling worker or the next process.

    Every ``text/event-stream`` response is endless without being marked (ended with no
    last chunk); ``endless(response, False)`` opts a stream out: it runs through the
    grace like any request in flight.

    The mark belongs to the request being served (call it in the view, or in code the
    view calls); outside a request GracefulASGI serves, it does nothing.
    """
    if not getattr(response, "streaming", False):
        raise TypeError(
            f"endless() marks a streaming response (StreamingHttpResponse), not {response!r}: "
            "any other response ends by itself"
        )
    if not enabled and last:
        raise TypeError("endless(response, False) opts the stream out: it takes no last chunk")
    if isinstance(last, str):
        last = response.make_bytes(last)
    elif not isinstance(last, bytes):
        raise TypeError(f"endless(last=...) is bytes or str, not {type(last).__name__}")
    item = current_item()
    if isinstance(item, TrackedRequest):
        item.endless = enabled
        item.last_chunk = last
    return response


def is_event_stream(headers: Iterable[Any]) -> bool:
    """Whether an ``http.response.start``'s headers say ``Content-Type: text/event-stream``."""
    for pair in headers:
        name, value = pair
        if isinstance(name, bytes) and name.lower() == b"content-type":
            media = value.partition(b";")[0] if isinstance(value, bytes) else b""
            return media.strip().lower() == EVENT_STREAM
    return False
