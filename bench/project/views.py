"""Views of the bench project: a hello world, and a slow request with a body a client can check.

Both set ``Content-Length`` themselves (the project has no CommonMiddleware), so every
server frames the body the same way and a client can tell a full body from a cut one.
"""

import asyncio
import os
import time

from django.http import HttpRequest, HttpResponse

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
