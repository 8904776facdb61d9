"""What a reused sync thread carries from one request to the next (REUSE_SYNC_THREADS).

Django's own per-request state never: the active language, time zone, URLconf and script
prefix, and the cache handles, live in asgiref's context-local ``Local``, which each
request starts empty; the transaction state of a connection is reset at the request's end
(Django's ``request_finished``, and django_graceful's for an atomic block left open). The
thread's own state does, as under a WSGI server's threads: a ``threading.local`` of the
user's, and the database connection objects (Django keeps them per thread), with their
session when ``CONN_MAX_AGE`` keeps it open.

Each request of a sequence reports what it found, then leaves all of that behind (see
tests/project/views_thread_state.py); a request is checked against the last one before
it on its thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connections

from django_graceful.asgi import GracefulASGI
from tests.project.views_thread_state import LEFT_HOOK_RAN

from .inprocess import NO_SIGNALS, Events, request
from .servers import SERVERS, running
from .test_sql import postgres_missing

#: What each request of a sequence leaves on its connection besides its markers: nothing
#: (a persistent connection stays open), an atomic block with a savepoint, a commit hook
#: and a rollback mark (django_graceful rolls it back and closes the connection), or
#: autocommit turned off (Django closes the connection).
LEFT = ["", "atomic", "", "autocommit", "", "", "atomic", ""]
#: The persistent connections' age on PostgreSQL (``CONN_MAX_AGE``): one stays open,
#: unless its request left a transaction.
PG_MAX_AGE = 60
PG_KEPT_AFTER = {""}
#: pytest-django's SQLite test database is in memory, which Django never closes: with
#: autocommit left off it stays open too (its transaction rolled back).
IN_MEMORY_KEPT_AFTER = {"", "autocommit"}


#: In-process, where a request ends only once its thread is back: most requests of a
#: sequence run on a thread an earlier one used (asgiref may hand a call's result to the
#: loop a moment before the call ends in its thread: the next request then takes another).
MOSTLY_REUSED = len(LEFT) // 2


def path(i: int, db: str) -> str:
    return f"/thread-state/?db={db}&leave=r{i}&left={LEFT[i]}"


def threads(found: list[dict[str, Any]]) -> list[str]:
    return [row["thread"] for row in found]


def check(found: list[dict[str, Any]], *, kept_after: set[str]) -> int:
    """Check each request's findings against what the last request before it on its thread
    left (``r<i>`` markers); how many ran on a thread an earlier one had used. The
    connection stays open after a request that left ``kept_after`` (``LEFT``)."""
    reused = 0
    for i, row in enumerate(found):
        before = [j for j in range(i) if found[j]["thread"] == row["thread"]]
        last = before[-1] if before else None
        reused += last is not None
        # Django's per-request state: as settings have it, whatever was left.
        assert row["language"] == django_settings.LANGUAGE_CODE, row
        assert row["timezone"] == django_settings.TIME_ZONE, row
        assert row["urlconf"] == django_settings.ROOT_URLCONF, row
        assert row["script_prefix"] == "/", row
        assert row["cache"] is None, row
        # The connection's transaction state: clean.
        assert not row["in_atomic_block"] and not row["needs_rollback"], row
        assert row["savepoints"] == 0 and row["commit_hooks"] == 0, row
        assert row["autocommit"], row
        # The thread's own: the user's thread-local and the connection objects carry over;
        # an open session only when it is persistent and was left clean.
        left_by = None if last is None else f"r{last}"
        assert row["user_local"] == left_by, (i, row)
        assert row["connection"] == left_by, (i, row)
        kept = last is not None and LEFT[last] in kept_after
        assert row["connected"] == kept, (i, row)
        if kept:
            assert last is not None and row["backend"] == found[last]["backend"], (i, row)
    return reused


# -- in-process ---------------------------------------------------------------------------


@pytest.fixture
def served(app: GracefulASGI) -> Iterator[GracefulASGI]:
    """The app; its idle threads closed after the test, with their connections."""
    yield app
    app._sync_threads.close()


async def sequence(app: GracefulASGI, db: str) -> list[dict[str, Any]]:
    found = []
    for i in range(len(LEFT)):
        status, _, body = await request(app, path(i, db))
        assert status == 200, body
        found.append(json.loads(body))
    return found


@pytest.mark.django_db(transaction=True, databases=["default"])
@pytest.mark.parametrize("reuse", [True, False], ids=["reused", "thread-per-request"])
async def test_django_state_never_carries_over_the_threads_own_does(
    served: GracefulASGI, settings: Any, recorded: Events, reuse: bool
) -> None:
    settings.GRACEFUL = {**NO_SIGNALS, "REUSE_SYNC_THREADS": reuse}
    found = await sequence(served, "default")
    assert connections["default"].is_in_memory_db()  # type: ignore[attr-defined]  # SQLite
    reused = check(found, kept_after=IN_MEMORY_KEPT_AFTER)
    if reuse:
        assert reused >= MOSTLY_REUSED, threads(found)
    else:
        assert reused == 0, threads(found)
    assert not recorded(LEFT_HOOK_RAN)


@pytest.mark.django_db(transaction=True, databases=["default", "pg"])
async def test_a_persistent_connection_carries_over_its_transaction_state_does_not(
    served: GracefulASGI, settings: Any, recorded: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    if (reason := postgres_missing()) is not None:
        pytest.skip(reason)
    settings.GRACEFUL = {**NO_SIGNALS, "REUSE_SYNC_THREADS": True}
    monkeypatch.setitem(connections.settings["pg"], "CONN_MAX_AGE", PG_MAX_AGE)
    found = await sequence(served, "pg")
    assert check(found, kept_after=PG_KEPT_AFTER) >= MOSTLY_REUSED, threads(found)
    assert not recorded(LEFT_HOOK_RAN)


# -- on the wire --------------------------------------------------------------------------


@pytest.mark.server
@pytest.mark.parametrize("server", SERVERS)
def test_on_a_server_django_state_never_carries_over_the_threads_own_does(server: str) -> None:
    if (reason := postgres_missing()) is not None:
        pytest.skip(reason)
    with running(server, env={"GRACEFUL_TEST_PG_CONN_MAX_AGE": str(PG_MAX_AGE)}) as srv:
        found = []
        for i in range(len(LEFT)):
            answer = srv.get(path(i, "pg"))
            assert answer.status_code == 200, srv.log()
            found.append(answer.json())
        assert check(found, kept_after=PG_KEPT_AFTER) >= 1, threads(found)
        assert not srv.events(LEFT_HOOK_RAN), srv.log()
