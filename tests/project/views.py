"""Views of the test project."""

import asyncio
import contextlib
import os
import threading
import time

from asgiref.sync import sync_to_async
from django.db import connections, transaction
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.utils.decorators import method_decorator
from django.views import View

from django_graceful import (
    CancelReason,
    RequestCancelled,
    cancellable,
    current_cancellation,
    endless,
    shield,
)
from django_graceful._core.registry import current_item
from django_graceful._serving.protocol import TRACKED_KEY

from .events import record


async def slow(request: HttpRequest) -> HttpResponse:
    seconds = float(request.GET.get("s", "1"))
    record("slow-begin", seconds=seconds)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        token = getattr(request, "cancellation", None)
        record("slow-cancelled", reason=str(token.reason) if token is not None else None)
        await asyncio.sleep(0)  # cleanup may still await once
        record("slow-cleanup")
        raise
    body = "x" * int(request.GET.get("size", "1000"))
    record("slow-end")
    return HttpResponse(body)


#: Lets an in-process test end the stubborn view (a real server's process just exits).
RELEASE_STUBBORN = threading.Event()


async def stubborn(request: HttpRequest) -> HttpResponse:
    """Swallows every cancellation: the worst case for a shutdown."""
    record("stubborn-begin")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not RELEASE_STUBBORN.is_set():
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            record("stubborn-swallowed")
    return HttpResponse("never")


async def state(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pool": request.state["pool"], "pid": os.getpid()})


def sync_pid(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid()})


def _is_current(request: HttpRequest) -> bool:
    item = request.scope.get(TRACKED_KEY)  # type: ignore[attr-defined]
    return item is not None and current_item() is item and current_cancellation() is item.token


async def current(request: HttpRequest) -> JsonResponse:
    """Where the request's tracked work is current: here, in a thread, in a task it starts."""
    in_task = asyncio.get_running_loop().create_task(asyncio.sleep(0, _is_current(request)))
    return JsonResponse(
        {
            "view": _is_current(request),
            "thread": await sync_to_async(_is_current)(request),
            "task": await asyncio.create_task(sync_to_async(_is_current)(request)),
            "task-now": await in_task,
        }
    )


def current_sync(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"view": _is_current(request)})


def export(request: HttpRequest) -> HttpResponse:
    """A sync view that checks its token between rows, as a long export would."""
    token = request.cancellation  # type: ignore[attr-defined]
    same = token is current_cancellation()  # asgiref carried the context into this thread
    record("export-begin", same_token=same)
    rows = 0
    try:
        for rows in range(int(request.GET.get("rows", "10000"))):  # noqa: B007
            token.raise_if_cancelled()
            time.sleep(0.01)
    except RequestCancelled as exc:
        record("export-stopped", reason=str(exc.reason), rows=rows)
        raise
    return HttpResponse(f"{rows + 1} rows")


async def cleanup(request: HttpRequest, reason: CancelReason) -> None:
    mode = request.GET.get("cleanup", "ok")
    record("cleanup", reason=str(reason), mode=mode)
    if mode == "raise":
        raise RuntimeError("cleanup failed (test)")
    if mode == "hang":
        await asyncio.sleep(3600)


@cancellable(on_cancel=cleanup)
async def guarded(request: HttpRequest) -> HttpResponse:
    record("guarded-begin")
    await asyncio.sleep(float(request.GET.get("s", "600")))
    return HttpResponse("done")


@cancellable(timeout=0.3, on_cancel=cleanup)
async def timed(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(600)
    return HttpResponse("never")


@cancellable(timeout=0.3)
def sync_timed(request: HttpRequest) -> HttpResponse:
    while True:
        request.cancellation.raise_if_cancelled()  # type: ignore[attr-defined]
        time.sleep(0.01)


async def shielded(request: HttpRequest) -> HttpResponse:
    """Commit-then-publish that must not be cut in half by a disconnect or a shutdown."""
    record("shield-begin")
    try:
        async with shield(timeout=float(request.GET.get("t", "2"))):
            await asyncio.sleep(float(request.GET.get("body", "0.3")))
            record("committed", reason=str(request.cancellation.reason))  # type: ignore[attr-defined]
        await asyncio.sleep(600)
    except asyncio.CancelledError:
        record("shield-cancelled")
        raise
    return HttpResponse("never")


@method_decorator(cancellable(timeout=0.3), name="dispatch")
class SlowView(View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(600)
        return HttpResponse("never")


async def events_stream(request: HttpRequest) -> StreamingHttpResponse:
    """Server-sent events until the client leaves or the server stops."""

    async def ticks():  # type: ignore[no-untyped-def]
        record("sse-open")
        n = 0
        try:
            while True:
                yield f"data: tick {n}\n\n"
                n += 1
                await asyncio.sleep(0.05)
        finally:
            record("sse-closed", ticks=n)

    return StreamingHttpResponse(ticks(), content_type="text/event-stream")


#: ``/stream/?kind=...``: each kind's content type and, by its view, its ``endless()``
#: mark: None (unmarked), False (opted out), or the last chunk it gives.
STREAM_KINDS: dict[str, tuple[str, bool | bytes | None]] = {
    "sse": ("text/event-stream", None),
    "sse-last": ("text/event-stream; charset=utf-8", b"event: restart\ndata: \nretry: 1000\n\n"),
    "sse-kept": ("text/event-stream", False),
    "ndjson": ("application/x-ndjson", None),
    "ndjson-endless": ("application/x-ndjson", b'{"end": true}\n'),
}


async def stream(request: HttpRequest) -> StreamingHttpResponse:
    """A stream with no end of its own (``?kind=`` one of STREAM_KINDS), a chunk each
    ``?tick=`` seconds (0.05); records ``stream-open``/``stream-closed`` with its kind, and
    its token's reason when its ``finally`` ran. ``?wait=`` seconds before the response."""
    await asyncio.sleep(float(request.GET.get("wait", "0")))
    kind = request.GET.get("kind", "sse")
    tick = float(request.GET.get("tick", "0.05"))
    content_type, mark = STREAM_KINDS[kind]
    token = current_cancellation()

    async def chunks():  # type: ignore[no-untyped-def]
        record("stream-open", kind=kind)
        n = 0
        try:
            while True:
                yield f"data: {n}\n\n" if "sse" in kind else f'{{"n": {n}}}\n'
                n += 1
                await asyncio.sleep(tick)
        finally:
            reason = token.reason
            record("stream-closed", kind=kind, n=n, reason=None if reason is None else str(reason))

    response = StreamingHttpResponse(chunks(), content_type=content_type)
    if mark is False:
        return endless(response, False)
    if isinstance(mark, bytes):
        return endless(response, last=mark.decode() if kind == "sse-last" else mark)
    return response


#: About 30 s of SQLite work on the test machine (a recursive CTE counting rows).
SQLITE_ROWS = 50_000_000
SQLITE_COUNT = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %s) "
    "SELECT count(*) FROM c"
)


def run_query(alias: str, sql: str, params: list[object], atomic: bool = False) -> HttpResponse:
    """One long statement; records when it began and how it ended (``sql-*`` events)."""
    connection = connections[alias]
    connection.ensure_connection()  # connecting is not part of the statement
    record("sql-begin", db=alias)
    began = time.monotonic()
    try:
        with transaction.atomic(using=alias) if atomic else contextlib.nullcontext():
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                (value,) = cursor.fetchone()
    except RequestCancelled as exc:
        record(
            "sql-interrupted",
            db=alias,
            reason=str(exc.reason),
            elapsed=time.monotonic() - began,
            cause=repr(exc.__cause__),
            in_atomic_block=connection.in_atomic_block,
        )
        raise
    record("sql-finished", db=alias, elapsed=time.monotonic() - began)
    return HttpResponse(str(value))


def sql_sqlite(request: HttpRequest) -> HttpResponse:
    return run_query("default", SQLITE_COUNT, [int(request.GET.get("n", SQLITE_ROWS))])


async def sql_sqlite_async(request: HttpRequest) -> HttpResponse:
    rows = int(request.GET.get("n", SQLITE_ROWS))
    try:
        return await sync_to_async(run_query)("default", SQLITE_COUNT, [rows])
    except asyncio.CancelledError:
        record("sql-view-cancelled")
        raise


def sql_pg(request: HttpRequest) -> HttpResponse:
    seconds = float(request.GET.get("s", "30"))
    return run_query("pg", "SELECT pg_sleep(%s)", [seconds], atomic="atomic" in request.GET)


sql_sqlite_timed = cancellable(timeout=0.5)(sql_sqlite)
sql_sqlite_async_timed = cancellable(timeout=0.5)(sql_sqlite_async)
sql_pg_timed = cancellable(timeout=0.5)(sql_pg)


def sql_ping(request: HttpRequest) -> JsonResponse:
    """A short statement on ``?db=``: the database still answers after an interrupt."""
    with connections[request.GET.get("db", "default")].cursor() as cursor:
        cursor.execute("SELECT 1")
        (value,) = cursor.fetchone()
    return JsonResponse({"value": value, "pid": os.getpid()})


def pg_backend(request: HttpRequest) -> JsonResponse:
    """The PostgreSQL backend (its pid) that serves this sync view's one statement, and
    the thread it runs on; held ``?s=`` seconds after the statement."""
    with connections["pg"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()
    time.sleep(float(request.GET.get("s", "0")))  # graceful: ignore[W006]
    return JsonResponse({"backend": backend, "thread": threading.current_thread().name})


#: What ``pg_fault`` does wrong (``?do=``), each answered 500.
PG_FAULTS = {
    "raise-in-atomic": (True, "SELECT 1", True),
    "error-in-atomic": (True, "SELECT 1 / 0", False),
    "terminated": (False, "SELECT pg_terminate_backend(pg_backend_pid())", False),
    "terminated-in-atomic": (True, "SELECT pg_terminate_backend(pg_backend_pid())", False),
}


def pg_fault(request: HttpRequest) -> HttpResponse:
    """A request that fails on PostgreSQL (``PG_FAULTS``): inside ``atomic()`` or not,
    by its own exception, an SQL error, or its backend terminated in the middle of it.
    Records its thread (``pg-fault``)."""
    atomic, sql, then_raise = PG_FAULTS[request.GET["do"]]
    record("pg-fault", thread=threading.current_thread().name)
    with transaction.atomic(using="pg") if atomic else contextlib.nullcontext():
        with connections["pg"].cursor() as cursor:
            cursor.execute(sql)
        if then_raise:
            raise RuntimeError("pg_fault: an error inside atomic()")
    return HttpResponse("not reached")


def pg_write(request: HttpRequest) -> JsonResponse:
    """Inserts ``?value=`` into the ``graceful_rows`` table, then raises if ``?fail``:
    with ``ATOMIC_REQUESTS`` the view's transaction."""
    with connections["pg"].cursor() as cursor:
        cursor.execute("INSERT INTO graceful_rows (value) VALUES (%s)", [request.GET["value"]])
    if "fail" in request.GET:
        raise RuntimeError("pg_write: failed after its insert")
    return JsonResponse({"thread": threading.current_thread().name})


def gives_up(request: HttpRequest) -> HttpResponse:
    """A sync view whose own code raises RequestCancelled (as the SQL interrupt does)."""
    raise RequestCancelled(CancelReason(request.GET["reason"]))


def download(request: HttpRequest) -> FileResponse:
    """A file sent whole (``?gzip`` marks it encoded, as a compressing middleware would)."""
    response = FileResponse(open(DOWNLOAD, "rb"), as_attachment=True)
    if "gzip" in request.GET:
        response["Content-Encoding"] = "gzip"
    return response


def bulk(request: HttpRequest) -> HttpResponse:
    """``?mb=`` megabytes in one body: more than the kernel's socket buffers hold, so a
    client that reads slowly keeps the server writing it after the view returned."""
    body = b"x" * int(float(request.GET.get("mb", "1")) * 2**20)
    record("bulk-sent")
    return HttpResponse(body, headers={"Content-Length": str(len(body))})


#: The file ``download`` sends: this module's own source.
DOWNLOAD = __file__


def sync_thread(request: HttpRequest) -> JsonResponse:
    """The thread this sync view runs on, after ``?s=`` seconds; ``?query`` runs a
    statement on it, ``?leave-transaction`` enters an atomic block it never leaves.
    Records ``sync-thread-sleeps`` before a sleep."""
    if seconds := float(request.GET.get("s", "0")):
        record("sync-thread-sleeps")
    time.sleep(seconds)  # graceful: ignore[W006]
    if "leave-transaction" in request.GET:
        transaction.atomic().__enter__()
    if "query" in request.GET or "leave-transaction" in request.GET:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
    return JsonResponse({"thread": threading.current_thread().name})


async def leaves_a_task(request: HttpRequest) -> JsonResponse:
    """Starts a task that outlives the request and then makes a thread-sensitive call."""

    async def later() -> None:
        await asyncio.sleep(0.05)
        name = await sync_to_async(lambda: threading.current_thread().name)()
        record("late-sync-call", thread=name)

    LEFT_TASKS.add(asyncio.ensure_future(later()))
    return JsonResponse({})


#: The tasks ``leaves_a_task`` started (held until they end).
LEFT_TASKS: set[asyncio.Task[None]] = set()
