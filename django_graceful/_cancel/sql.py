"""Interrupting the SQL statement a request is running when the request is cancelled."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from django.db import Error as DatabaseError
from django.db.backends.signals import connection_created

from .._core.cancellation import NEVER, CancelReason, RequestCancelled
from .._core.registry import current_cancellation

logger = logging.getLogger("django_graceful")

#: Django's database vendors whose running statement we know how to stop.
VENDORS = frozenset({"sqlite", "postgresql"})
#: SQLite's result code of an interrupted statement (sqlite3.SQLITE_INTERRUPT).
SQLITE_INTERRUPT = 9
#: PostgreSQL's SQLSTATE query_canceled (also what statement_timeout raises).
PG_QUERY_CANCELED = "57014"
#: Bound for a PostgreSQL cancel request (it runs in a daemon thread of its own).
PG_CANCEL_TIMEOUT = 5.0
#: How long a statement that ended while our cancel request was still on its way
#: waits for it to arrive, so that it cannot hit the connection's next statement.
SETTLE_TIMEOUT = 1.0


def install() -> None:
    """Give every database connection opened from now on the interrupting wrapper."""
    connection_created.connect(_on_connection_created, dispatch_uid="django_graceful.sql")


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    wrappers = connection.execute_wrappers
    if connection.vendor in VENDORS and interruptible not in wrappers:
        # First in the list is the outermost wrapper; and a user's
        # ``with connection.execute_wrapper(...)`` pops the last one, never ours.
        wrappers.insert(0, interruptible)


def interruptible(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Django execute wrapper: the request's cancel stops the statement on the database.

    While the statement runs, a token callback stands ready to interrupt it
    (SQLite: ``interrupt()``; PostgreSQL: a cancel request). A statement the cancel
    reached ends in ``RequestCancelled(reason)`` from the database's error; any other
    error is left as it is. A statement that starts after the cancel (a rollback,
    the view's cleanup) runs normally. Outside a request: nothing but this check.
    """
    token = current_cancellation()
    if token is NEVER or token.reason is not None:
        return execute(sql, params, many, context)
    connection = context["connection"]
    interrupt = _Interrupt(connection.connection, connection.vendor)
    remove = token.on_cancel(interrupt)
    try:
        try:
            result = execute(sql, params, many, context)
        finally:
            remove()
            interrupt.close()
    except DatabaseError as exc:
        if interrupt.fired and _is_interruption(exc, connection.vendor):
            raise _cancelled(token.reason, connection.alias) from exc
        raise
    if interrupt.fired:
        # The cancel came as the statement ended. An interrupted SQLite connection
        # stays interrupted while this statement has rows to step through: reset it.
        if connection.vendor == "sqlite":
            with contextlib.suppress(Exception):
                context["cursor"].cursor.close()
        raise _cancelled(token.reason, connection.alias)
    return result


def _cancelled(reason: CancelReason | None, alias: str) -> RequestCancelled:
    reason = reason or CancelReason.DISCONNECT  # always set before the callbacks run
    logger.info("SQL on database %r interrupted: request %s", alias, reason)
    return RequestCancelled(reason)


#: Orders an interrupt against the end of its statement (held for microseconds, and
#: only when a token is cancelled).
_lock = threading.Lock()


class _Interrupt:
    """Token callback that stops the statement running on one raw connection, once,
    and never after ``close()``: it cannot reach the connection's next statement."""

    __slots__ = ("_raw", "_thread", "_vendor", "closed", "fired")

    def __init__(self, raw: Any, vendor: str) -> None:
        self._raw = raw
        self._vendor = vendor
        self._thread: threading.Thread | None = None
        self.closed = False
        self.fired = False

    def __call__(self, reason: CancelReason) -> None:
        # Runs in the thread that cancelled the token: often the event loop's.
        with _lock:
            self.fired = True
            if self.closed:
                return
            if self._vendor == "sqlite":
                self._raw.interrupt()  # sets a flag: thread-safe and immediate
            else:
                # A cancel request opens a connection to the server: never block
                # the event loop (or the timer that cancelled) for it.
                self._thread = threading.Thread(
                    target=_cancel_pg, args=(self._raw,), name="graceful-sql-cancel", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        # Lock-free unless the callback ran: it sets ``fired`` before it reads
        # ``closed``, and this sets ``closed`` before it reads ``fired``, so either
        # the callback sees ``closed`` or this waits for the callback to finish.
        self.closed = True
        if self.fired:
            with _lock:
                thread = self._thread
            if thread is not None:
                thread.join(SETTLE_TIMEOUT)


def _cancel_pg(raw: Any) -> None:
    try:
        cancel_safe = getattr(raw, "cancel_safe", None)  # psycopg >= 3.2
        if cancel_safe is not None:
            cancel_safe(timeout=PG_CANCEL_TIMEOUT)
        else:
            raw.cancel()  # psycopg < 3.2 and psycopg2: blocking, thread-safe
    except Exception as exc:
        logger.warning("could not cancel a running PostgreSQL query: %s", exc)


def _is_interruption(exc: BaseException, vendor: str) -> bool:
    """Did the statement fail because it was interrupted (not for a reason of its own)?"""
    cause = exc.__cause__ or exc
    if vendor == "sqlite":
        code = getattr(cause, "sqlite_errorcode", None)
        return code == SQLITE_INTERRUPT if code is not None else str(cause) == "interrupted"
    state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    return state == PG_QUERY_CANCELED
