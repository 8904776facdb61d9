"""Views of the bench project: a hello world, a slow request with a body a client can check,
a small JSON answer and a 1 MB streamed one (``bench/request_cost.py``, ``bench/rsgi.py``),
and an endless event stream (``bench/shutdown.py``).

All but the streamed one set ``Content-Length`` themselves (the project has no
CommonMiddleware), so every server frames the body the same way and a client can tell a
full body from a cut one; the streamed one has none, as a stream usually has not: the
servers send it chunked, and the client counts its bytes.
"""

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

HELLO = b"Hello, world!\n"
#: Size of the slow view's body: large enough that a cut-off response shows.
SLOW_BODY_SIZE = 32 * 1024
MAX_SLOW_SECONDS = 3600.0


def _response(body: bytes) -> HttpResponse:
    response = HttpResponse(body, content_type="text/plain")
    response["Content-Length"] = str(len(body))
    return response


def mark(event: str) -> None:
    """Append ``event`` to the file named by ``BENCH_MARKS`` (the harness waits for it)."""
    path = os.environ.get("BENCH_MARKS")
    if path:
        with open(path, "a") as f:
            f.write(f"{event} {os.getpid()} {time.time():.6f}\n")


async def hello(request: HttpRequest) -> HttpResponse:
    return _response(HELLO)


async def slow(request: HttpRequest) -> HttpResponse:
    """Sleep ``?s=`` seconds (at most an hour), then answer ``SLOW_BODY_SIZE`` bytes."""
    seconds = min(float(request.GET.get("s", "1")), MAX_SLOW_SECONDS)
    mark("slow-begin")
    await asyncio.sleep(seconds)
    return _response(b"x" * SLOW_BODY_SIZE)


#: The JSON view's answer: a small dict, as an API endpoint returns.
JSON_DATA = {"message": "Hello, world!", "ok": True, "items": [1, 2, 3], "page": {"n": 1}}
JSON_BODY_SIZE = len(json.dumps(JSON_DATA).encode())
#: The streamed view: STREAM_CHUNKS parts of STREAM_CHUNK_SIZE bytes (1 MiB in all).
STREAM_CHUNK_SIZE = 64 * 1024
STREAM_CHUNKS = 16
STREAM_SIZE = STREAM_CHUNK_SIZE * STREAM_CHUNKS
_STREAM_CHUNK = b"x" * STREAM_CHUNK_SIZE


async def json_view(request: HttpRequest) -> JsonResponse:
    response = JsonResponse(JSON_DATA)
    response["Content-Length"] = str(len(response.content))
    return response


async def _chunks() -> AsyncIterator[bytes]:
    for _ in range(STREAM_CHUNKS):
        yield _STREAM_CHUNK


async def stream(request: HttpRequest) -> StreamingHttpResponse:
    """1 MiB in 16 parts from an async iterator (what an ASGI handler streams as is)."""
    return StreamingHttpResponse(_chunks(), content_type="application/octet-stream")


async def events(request: HttpRequest) -> StreamingHttpResponse:
    """Server-sent events, a tick a second, with no end of their own (an open EventSource)."""

    async def ticks() -> AsyncIterator[bytes]:
        mark("events-begin")
        n = 0
        while True:
            yield f"data: {n}\n\n".encode()
            n += 1
            await asyncio.sleep(1)

    return StreamingHttpResponse(ticks(), content_type="text/event-stream")
