"""Example views: each shows one way django_graceful stops work cleanly."""

import asyncio
import logging
import time

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from django_graceful import CancelReason, RequestCancelled, cancellable, endless, shield

from .producer import producer

logger = logging.getLogger("example_project")


async def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        "Hello from django_graceful. Try, then press Ctrl-C or close the client:\n"
        "  /slow/?seconds=5    an async view that drains, then is cancelled\n"
        "  /export/?rows=500   a sync view that checks its cancellation token\n"
        "  /events/            server-sent events until you leave; ended at once when the\n"
        "                      server stops, with retry: 1000 (the EventSource reconnects)\n"
        "  /timeout/           @cancellable(timeout=2): a 504 after 2 s\n"
        "  /report/            a 30 s SQL query, stopped in the database when you leave\n"
        "  /order/             shield(): a commit that finishes despite a cancel\n"
        "  /state/             state from a LIFESPAN manager\n"
        "  /health/ready/      503 from the shutdown signal on\n"
        "  /produce/?n=120     hand 120 messages to the background producer thread\n"
        "  /stubborn/          a deliberately bad view that swallows every cancel (for\n"
        "                      checkshutdown and checkshutdown --drill to find)\n"
        "  ws://…/ws/echo/     a websocket: echo, '/all text' to everyone; closed with 1012\n"
        "                      at shutdown (python -m websockets ws://127.0.0.1:8000/ws/echo/)\n"
    )


async def cleanup(request: HttpRequest, reason: CancelReason) -> None:
    logger.info("cleanup for %s: %s", request.path, reason)


@cancellable(on_cancel=cleanup)
async def slow(request: HttpRequest) -> HttpResponse:
    """Sleeps ``seconds`` (default 5): send SIGTERM meanwhile and watch it drain."""
    seconds = float(request.GET.get("seconds", "5"))
    await asyncio.sleep(seconds)
    return HttpResponse(f"slept {seconds:g} s\n")


@cancellable
def export(request: HttpRequest) -> HttpResponse:
    """A sync loop that stops within one row of a disconnect or a shutdown."""
    rows = int(request.GET.get("rows", "500"))
    done = 0
    try:
        for done in range(1, rows + 1):  # noqa: B007
            request.cancellation.raise_if_cancelled()
            time.sleep(0.01)  # one row of work
    except RequestCancelled as exc:
        logger.info("export stopped after %d of %d rows: %s", done, rows, exc.reason)
        raise
    return HttpResponse(f"exported {done} rows\n")


#: About 30 s of work for SQLite: a recursive count with no table behind it.
SLOW_QUERY = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000000) "
    "SELECT count(*) FROM n"
)


@cancellable(timeout=10)
def report(request: HttpRequest) -> HttpResponse:
    """A slow SQL query: close the client (or Ctrl-C the server) and the database stops it."""
    with connection.cursor() as cursor:
        cursor.execute(SLOW_QUERY)
        (count,) = cursor.fetchone()
    return HttpResponse(f"counted {count}\n")


#: The last event of a stream ended by the shutdown: an ``EventSource`` gets a "restart"
#: event and reconnects within a second (to a sibling worker, or the next process).
RESTART = "event: restart\ndata: \nretry: 1000\n\n"


async def events(request: HttpRequest) -> StreamingHttpResponse:
    """Server-sent events; the generator's ``finally`` runs on disconnect and shutdown.

    An event stream has no end of its own: at a shutdown (or a dev-server reload) it is
    ended when the grace begins, not streamed through it; ``endless(last=...)`` gives its
    last chunk.
    """

    async def ticks():  # type: ignore[no-untyped-def]
        n = 0
        try:
            while True:
                yield f"data: tick {n}\n\n"
                n += 1
                await asyncio.sleep(1)
        finally:
            logger.info("event stream closed after %d ticks", n)

    response = StreamingHttpResponse(ticks(), content_type="text/event-stream")
    return endless(response, last=RESTART)


@cancellable(timeout=2)
async def timeout(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(60)
    return HttpResponse("never\n")


async def stubborn(request: HttpRequest) -> HttpResponse:
    """A DELIBERATELY BAD view: do not copy it. It catches every cancellation and goes on.

    It is here for ``manage.py checkshutdown`` (while it runs) and ``checkshutdown --drill
    --url /stubborn/`` (at SIGTERM) to find: the shutdown cancels it, it swallows the
    cancel, the cancel is repeated until CANCEL_TIMEOUT, and the worker's last shutdown
    report names it ``swallowed-cancel`` at the ``await`` below. The process still exits
    within the budget (the request is abandoned, the client gets nothing). The fix is to
    let ``CancelledError`` propagate (clean up in ``finally`` or in ``on_cancel``).
    """
    while True:
        try:
            await asyncio.sleep(0.1)  # the drill's report points here
        except asyncio.CancelledError:
            logger.warning("stubborn view: cancel swallowed (a bad example, on purpose)")


async def order(request: HttpRequest) -> HttpResponse:
    """Commit and publish must both happen, or neither: shield the pair."""
    async with shield(timeout=5):
        await asyncio.sleep(1)  # commit
        await asyncio.sleep(1)  # publish
    return HttpResponse("order placed\n")


async def state(request: HttpRequest) -> JsonResponse:
    pool = request.state["pool"]
    return JsonResponse({"pool": pool["name"], "open": pool["open"]})


async def produce(request: HttpRequest) -> JsonResponse:
    """Enqueue ``n`` messages; the producer thread flushes them in batches (and on stop)."""
    n = min(int(request.GET.get("n", "120")), 100_000)
    for i in range(n):
        producer.send(f"order {i}")
    return JsonResponse({"queued": n, "sent": producer.sent, "delivered": producer.delivered})
