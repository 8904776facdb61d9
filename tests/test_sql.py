"""A cancelled request's running SQL is stopped on the database: SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import DatabaseError, connections, transaction

from django_graceful import CancellationToken, CancelReason, RequestCancelled
from django_graceful._cancel import sql
from django_graceful._core.registry import Tracked, WorkKind, reset_item, use_item
from django_graceful.asgi import GracefulASGI
from tests.project.views import SQLITE_COUNT, SQLITE_ROWS

from .inprocess import NO_SIGNALS, Events, open_request, request, start, stop, wait_for
from .servers import running

#: How soon after the cancel the statement must have stopped and the view know it.
BOUND = 0.5
#: The statements run in threads of their own (as a sync view's), on SQLite and PostgreSQL:
#: pytest-django's test databases, committed (``transactional_db``), every alias.
QUERIES = pytest.mark.django_db(transaction=True, databases="__all__")


@functools.cache
def postgres_missing() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when they can."""
    if "pg" not in django_settings.DATABASES:
        return "PostgreSQL is not listening on 127.0.0.1:5432 (the 'pg' alias is not configured)"
    try:
        import psycopg

        psycopg.connect(
            host="127.0.0.1", port=5432, dbname="test", user="postgres", connect_timeout=2
        ).close()
    except Exception as exc:
        return f"PostgreSQL on 127.0.0.1:5432 (db test, user postgres, trust auth) refused: {exc}"
    return None


@pytest.fixture
def postgres() -> None:
    reason = postgres_missing()
    if reason is not None:
        pytest.skip(reason)


DATABASES = [
    pytest.param("default", SQLITE_COUNT, [SQLITE_ROWS], id="sqlite"),
    pytest.param("pg", "SELECT pg_sleep(%s)", [30], id="postgresql"),
]


def needs(alias: str) -> None:
    if alias == "pg" and (reason := postgres_missing()) is not None:
        pytest.skip(reason)


def work_item() -> Tracked:
    """Tracked work for ``in_thread`` (``.token``: its token)."""
    return Tracked(WorkKind.REQUEST, "GET /sql/")


def in_thread(item: Tracked | None, work: Callable[[], Any]) -> Any:
    """Run ``work`` as a sync view would: in a thread of its own, for the request's work
    (``current_cancellation()`` is its token; None: for no request).

    Returns what it returned or raises what it raised; its connections are closed.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        previous = use_item(item)
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            reset_item(previous)
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(40)
    assert not thread.is_alive(), "the statement was not interrupted"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def cancel_later(token: CancellationToken, reason: CancelReason, delay: float) -> list[float]:
    """Cancel ``token`` from a timer thread after ``delay`` s; the list gets the time it did."""
    at: list[float] = []

    def fire() -> None:
        at.append(time.monotonic())
        token.cancel(reason)

    timer = threading.Timer(delay, fire)
    timer.daemon = True
    timer.start()
    return at


# -- the wrapper itself, under a token, as in a sync view --------------------------------


@QUERIES
@pytest.mark.parametrize("atomic", [False, True], ids=["autocommit", "atomic"])
@pytest.mark.parametrize(("alias", "statement", "params"), DATABASES)
def test_a_running_statement_is_interrupted_and_the_connection_stays_usable(
    alias: str, statement: str, params: list[Any], atomic: bool
) -> None:
    needs(alias)
    item = work_item()
    token = item.token

    def work() -> dict[str, Any]:
        connection = connections[alias]
        connection.ensure_connection()
        raw = connection.connection
        cancelled_at = cancel_later(token, CancelReason.TIMEOUT, 0.3)
        with pytest.raises(RequestCancelled) as caught:
            with transaction.atomic(using=alias) if atomic else contextlib.nullcontext():
                with connection.cursor() as cursor:
                    cursor.execute(statement, params)
        stopped = time.monotonic() - cancelled_at[0]
        # The atomic block rolled back; the same connection runs the next statement.
        assert connection.connection is raw
        assert not connection.in_atomic_block and not connection.needs_rollback
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
        return {"exc": caught.value, "stopped": stopped}

    result = in_thread(item, work)
    exc = result.pop("exc")
    assert exc.reason is CancelReason.TIMEOUT
    assert isinstance(exc.__cause__, DatabaseError)  # the error our interrupt caused
    assert result["stopped"] < BOUND
    assert not token._callbacks  # removed after the statement: nothing refers to it
    del exc  # its traceback holds the wrapper's frame
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is sql._Interrupt]


@QUERIES
@pytest.mark.parametrize("alias", ["default", "pg"], ids=["sqlite", "postgresql"])
def test_statements_that_finish_leave_no_callback(alias: str) -> None:
    needs(alias)
    item = work_item()
    token = item.token

    def work() -> Any:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone()

    assert in_thread(item, work) == (1,)
    assert token._callbacks == []
    assert not token.cancelled


ROWS = {
    "default": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) "
    "SELECT x FROM c",
    "pg": "SELECT generate_series(1, 1000)",
}


@QUERIES
@pytest.mark.parametrize("alias", ["default", "pg"], ids=["sqlite", "postgresql"])
def test_a_cancel_as_the_statement_ends_cannot_reach_the_next_one(alias: str) -> None:
    """The view is told, and the connection's next statement runs normally (an
    interrupted SQLite connection stays interrupted while a statement has rows left;
    a PostgreSQL cancel request may arrive late)."""
    needs(alias)
    item = work_item()
    token = item.token

    def cancel_on_return(execute: Any, *args: Any) -> Any:
        result = execute(*args)
        token.cancel(CancelReason.DISCONNECT)
        return result

    def work() -> Any:
        connection = connections[alias]
        cursor = connection.cursor()
        with pytest.raises(RequestCancelled), connection.execute_wrapper(cancel_on_return):
            cursor.execute(ROWS[alias])
        with connection.cursor() as other:
            other.execute("SELECT 1" if alias == "default" else "SELECT 1 FROM pg_sleep(0.3)")
            return other.fetchone()

    assert in_thread(item, work) == (1,)


@QUERIES
def test_other_database_errors_are_unchanged() -> None:
    item = work_item()

    def work() -> None:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")

    with pytest.raises(DatabaseError, match="no such table"):
        in_thread(item, work)


@QUERIES
def test_a_statement_timeout_on_postgresql_is_not_taken_for_a_cancel(postgres: None) -> None:
    item = work_item()

    def work() -> None:
        with connections["pg"].cursor() as cursor:
            cursor.execute("SET statement_timeout = 100")
            cursor.execute("SELECT pg_sleep(5)")

    with pytest.raises(DatabaseError, match="statement timeout"):
        in_thread(item, work)


@QUERIES
def test_a_statement_that_starts_after_the_cancel_runs_normally() -> None:
    """Cleanup and rollbacks after a cancel must still reach the database."""
    item = work_item()
    token = item.token
    token.cancel(CancelReason.DISCONNECT)

    def work() -> Any:
        with connections["default"].cursor() as cursor:
            cursor.execute(SQLITE_COUNT, [200_000])
            return cursor.fetchone()

    assert in_thread(item, work) == (200_000,)


@QUERIES
def test_without_a_request_token_the_wrapper_does_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def forbidden(*args: Any) -> None:
        raise AssertionError("an interrupt was prepared outside any request")

    monkeypatch.setattr(sql, "_Interrupt", forbidden)

    def work() -> Any:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone()

    assert in_thread(None, work) == (1,)


@QUERIES
def test_a_users_execute_wrapper_block_keeps_ours() -> None:
    """The connection may be opened inside ``with connection.execute_wrapper(...)``;
    its exit pops the last wrapper, which must be the user's."""
    seen: list[str] = []

    def user_wrapper(execute: Any, statement: str, *args: Any) -> Any:
        seen.append(statement)
        return execute(statement, *args)

    def work() -> list[Any]:
        connection = connections["default"]
        assert connection.connection is None  # a new thread: opened below
        with connection.execute_wrapper(user_wrapper):
            connection.cursor().execute("SELECT 1")
        return list(connection.execute_wrappers)

    assert in_thread(work_item(), work) == [sql.interruptible]
    assert seen == ["SELECT 1"]


# -- through the ASGI app: disconnect, @cancellable timeout, shutdown ---------------------


VIEWS = [
    pytest.param("default", "/sql/sqlite/", id="sqlite-sync"),
    pytest.param("default", "/sql/sqlite-async/", id="sqlite-async"),
    pytest.param("pg", "/sql/pg/", id="pg-sync"),
    pytest.param("pg", "/sql/pg/?atomic=1", id="pg-atomic"),
]


@pytest.fixture
def warm() -> Iterator[None]:
    """Connect once first: the first PostgreSQL connection of a process is slow (imports)."""
    if postgres_missing() is None:
        connections["pg"].ensure_connection()
        connections["pg"].close()
    yield


@QUERIES
@pytest.mark.parametrize(("alias", "path"), VIEWS)
async def test_a_client_disconnect_interrupts_the_running_query(
    app: GracefulASGI,
    recorded: Events,
    alias: str,
    path: str,
    warm: None,
    settings: Any,
) -> None:
    needs(alias)
    settings.GRACEFUL = NO_SIGNALS
    comm = await open_request(app, path)
    await wait_for(recorded, "sql-begin")
    await asyncio.sleep(0.3)  # the statement is running
    left = time.time()
    await comm.send_input({"type": "http.disconnect"})
    interrupted = await wait_for(recorded, "sql-interrupted")
    assert interrupted["reason"] == "disconnect"
    assert interrupted["t"] - left < BOUND, interrupted
    await comm.wait(3)
    await _assert_next_request_uses(app, alias)


@QUERIES
@pytest.mark.parametrize(
    ("alias", "path"),
    [
        pytest.param("default", "/sql/sqlite-timed/", id="sqlite-sync"),
        pytest.param("default", "/sql/sqlite-async-timed/", id="sqlite-async"),
        pytest.param("pg", "/sql/pg-timed/", id="pg-sync"),
    ],
)
async def test_a_cancellable_timeout_interrupts_the_running_query(
    app: GracefulASGI,
    recorded: Events,
    alias: str,
    path: str,
    warm: None,
    settings: Any,
) -> None:
    needs(alias)
    settings.GRACEFUL = NO_SIGNALS
    sent = time.time()
    comm = await open_request(app, path)
    response = await comm.receive_output(3)
    assert response["status"] == 504
    interrupted = await wait_for(recorded, "sql-interrupted")
    assert interrupted["reason"] == "timeout"
    # The timer starts when the view does, no sooner than ``sent``: an upper bound.
    assert interrupted["t"] - (sent + 0.5) < BOUND, interrupted
    await comm.receive_output(1)
    await comm.wait(3)
    await _assert_next_request_uses(app, alias)


@QUERIES
async def test_the_shutdown_interrupts_the_running_query(
    app: GracefulASGI, recorded: Events, settings: Any
) -> None:
    settings.GRACEFUL = {**NO_SIGNALS, "GRACE_PERIOD": 0.1, "CANCEL_TIMEOUT": 2}
    lifespan, _ = await start(app)
    comm = await open_request(app, "/sql/sqlite/")
    await wait_for(recorded, "sql-begin")
    began = time.time()
    await stop(lifespan, 3)
    interrupted = await wait_for(recorded, "sql-interrupted")
    assert interrupted["reason"] == "shutdown"
    assert interrupted["t"] - (began + 0.1) < BOUND, interrupted
    assert (await comm.receive_output(1))["status"] == 503


async def _assert_next_request_uses(app: GracefulASGI, alias: str) -> None:
    status, _, body = await request(app, f"/sql/ping/?db={alias}")
    assert status == 200, body
    assert b'"value": 1' in body


# -- a real server: the client hangs up mid-query ----------------------------------------


@pytest.mark.server
@pytest.mark.parametrize(
    ("alias", "path"),
    [pytest.param("default", "/sql/sqlite/", id="sqlite"), pytest.param("pg", "/sql/pg/", id="pg")],
)
def test_uvicorn_client_hang_up_interrupts_the_query(alias: str, path: str) -> None:
    needs(alias)
    with running("uvicorn") as srv:
        client = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        (begin,) = srv.wait_event("sql-begin")
        time.sleep(0.3)  # the statement is running
        left = time.time()
        client.close()
        (interrupted,) = srv.wait_event("sql-interrupted", timeout=5)
        assert interrupted["reason"] == "disconnect"
        assert interrupted["t"] - left < BOUND, interrupted
        response = srv.get(f"/sql/ping/?db={alias}")
        assert response.status_code == 200, response.text
        assert response.json() == {"value": 1, "pid": begin["pid"]}
        assert srv.events("sql-finished") == []
