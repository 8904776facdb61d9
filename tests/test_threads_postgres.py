"""REUSE_SYNC_THREADS on PostgreSQL, on real servers: persistent connections bounded by
the requests in flight, health checks, failed requests that poison nothing,
ATOMIC_REQUESTS, Django's psycopg pool, and connections closed cleanly at a SIGTERM.

Each test's server connects to a database of this test process's own, so that its
backends (``pg_stat_activity``) and how their sessions ended (``pg_stat_database``) are
its own to count.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any, NamedTuple

import httpx
import pytest

from django_graceful._serving.threads import SURPLUS_IDLE
from tests.project.views import PG_FAULTS

from .servers import DELIVERY_SERVERS, Server, in_background, running
from .test_sql import postgres_missing

pytestmark = pytest.mark.server

#: Clients at once, and the requests each sends one after the other.
CLIENTS, REQUESTS_EACH = 4, 40
#: Where the tests connect as the server's admin (not the server's own database).
ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "connect_timeout": 5}


def connect(dbname: str = "test") -> Any:
    import psycopg

    return psycopg.connect(**ADMIN, dbname=dbname, autocommit=True)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A database of this process's own, with a ``graceful_rows`` table (pg_write)."""
    if (reason := postgres_missing()) is not None:
        pytest.skip(reason)
    name = f"graceful_threads_{os.getpid()}"
    with connect() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    with connect(name) as db:
        db.execute("CREATE TABLE graceful_rows (id serial PRIMARY KEY, value text NOT NULL)")
    yield name
    with connect() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def serving(
    server: str, database: str, graceful: dict[str, Any] | None = None, **pg: Any
) -> Iterator[Server]:
    """``server`` on ``database`` with persistent connections (``CONN_MAX_AGE`` 60) and
    the 'pg' alias's other settings ``pg``."""
    settings = {"NAME": database, "CONN_MAX_AGE": 60, **pg}
    with running(server, graceful=graceful, env={"GRACEFUL_TEST_PG": json.dumps(settings)}) as srv:
        yield srv


def backends_of(database: str) -> list[int]:
    """The backends connected to ``database`` now."""
    with connect() as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", [database]
        ).fetchall()
    return [pid for (pid,) in rows]


def wait_no_backends(database: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while left := backends_of(database):
        assert time.monotonic() < deadline, f"backends still on {database}: {left}"
        time.sleep(0.05)


def backends_used(url: str, requests_each: int = REQUESTS_EACH) -> set[int]:
    """The backends that served ``CLIENTS`` clients' requests (each a sync view with one
    statement), ``CLIENTS`` requests in flight at most; every request answered 200."""

    def client() -> list[int]:
        with httpx.Client(base_url=url, timeout=30) as http:
            answers = [http.get("/sql/pg-backend/") for _ in range(requests_each)]
        assert [a.status_code for a in answers] == [200] * requests_each, answers[-1].text
        return [answer.json()["backend"] for answer in answers]

    futures: list[Future[list[int]]] = [in_background(client) for _ in range(CLIENTS)]
    return {backend for future in futures for backend in future.result(timeout=120)}


# -- persistent connections ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "health_checks"),
    [
        ("uvicorn", False),
        ("gunicorn-uvicorn", True),
        ("daphne", False),
        ("granian", False),
        ("granian-rsgi", False),
    ],
)
def test_persistent_connections_stay_bounded_by_the_requests_in_flight(
    server: str, health_checks: bool, database: str
) -> None:
    """Django ticket 33497: under ASGI a thread per request opens a backend per request
    (160 of 160) however long CONN_MAX_AGE is. On reused threads a client's next request
    gets the thread its last one ran on, even when it comes before that request's close
    (``request_finished``) ended there: one thread, one backend, per request in flight."""
    with serving(server, database, CONN_HEALTH_CHECKS=health_checks) as srv:
        backends = backends_used(srv.url)
    assert len(backends) <= CLIENTS + 2, f"{len(backends)} backends for 160 requests"


def test_more_requests_in_flight_than_idle_threads_keep_their_backends(database: str) -> None:
    """A steady load with more requests in flight than ``IDLE_SYNC_THREADS``: a thread
    that comes back beyond the bound is kept a while and taken again, rather than ended
    and another started (with another backend) for the next request."""
    with serving("uvicorn", database, {"IDLE_SYNC_THREADS": 1}) as srv:
        backends = backends_used(srv.url)
    assert len(backends) <= CLIENTS + 2, f"{len(backends)} backends for 160 requests"


def test_a_thread_the_pool_has_no_room_for_closes_its_connection(database: str) -> None:
    """After ``CLIENTS`` requests at once (each holds its thread 0.5 s), the threads
    beyond ``IDLE_SYNC_THREADS`` end (``SURPLUS_IDLE`` later), each once it closed its
    backend: one thread left idle, one backend left open (not one per thread that served,
    until the garbage collector finds their connections)."""
    with serving("uvicorn", database, {"IDLE_SYNC_THREADS": 1}) as srv:
        answers = [in_background(srv.get, "/sql/pg-backend/?s=0.5") for _ in range(CLIENTS)]
        used = {answer.result(30).json()["backend"] for answer in answers}
        assert len(used) == CLIENTS, used
        deadline = time.monotonic() + SURPLUS_IDLE + 5
        while len(left := backends_of(database)) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(left) == 1, f"{len(left)} backends open, {len(used)} used"


@pytest.mark.parametrize(
    ("server", "health_checks"),
    [*((server, True) for server in DELIVERY_SERVERS), ("uvicorn", False)],
)
def test_a_backend_terminated_between_requests_is_replaced_with_health_checks(
    server: str, health_checks: bool, database: str
) -> None:
    """With ``CONN_HEALTH_CHECKS`` the thread whose backend was terminated reconnects at
    its next request; without, that request fails (500), and closes the connection
    so that the next one reconnects (Django's own behaviour, unchanged)."""
    # One idle thread: the next request is served where the terminated backend was.
    graceful = {"IDLE_SYNC_THREADS": 1}
    with (
        serving(server, database, graceful, CONN_HEALTH_CHECKS=health_checks) as srv,
        srv.client() as http,
    ):
        first = http.get("/sql/pg-backend/").json()
        with connect() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                [database],
            )
        wait_no_backends(database)
        after = [http.get("/sql/pg-backend/") for _ in range(3)]
    statuses = [answer.status_code for answer in after]
    assert statuses == ([200, 200, 200] if health_checks else [500, 200, 200]), srv.log()
    answers = [answer.json() for answer in after if answer.status_code == 200]
    assert first["thread"] in {answer["thread"] for answer in answers}
    assert first["backend"] not in {answer["backend"] for answer in answers}


# -- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize("server", DELIVERY_SERVERS)
def test_a_request_that_fails_on_the_database_does_not_poison_its_thread(
    server: str, database: str
) -> None:
    """Each of ``PG_FAULTS`` (an error inside ``atomic()``, an SQL error there, the
    backend terminated in the middle of the request, inside ``atomic()`` or not) answers
    500; the requests after it on the same thread answer 200."""
    outcomes: dict[str, tuple[int, str, list[tuple[int, str]]]] = {}
    with (
        serving(server, database, {"IDLE_SYNC_THREADS": 1}) as srv,
        srv.client() as http,
    ):
        for count, fault in enumerate(PG_FAULTS, 1):
            status = http.get(f"/sql/pg-fault/?do={fault}").status_code
            thread = srv.wait_event("pg-fault", count)[-1]["thread"]
            after = [http.get("/sql/pg-backend/") for _ in range(2)]
            outcomes[fault] = (
                status,
                thread,
                [
                    (a.status_code, a.json()["thread"] if a.status_code == 200 else "")
                    for a in after
                ],
            )
    for fault, (status, thread, after) in outcomes.items():
        assert status == 500, (fault, srv.log())
        assert [code for code, _ in after] == [200, 200], (fault, srv.log())
        assert thread in {name for _, name in after}, (fault, thread, after)


@pytest.mark.parametrize(
    ("server", "atomic_requests"),
    [*((server, True) for server in DELIVERY_SERVERS), ("uvicorn", False)],
)
def test_atomic_requests_commit_a_view_that_answers_and_roll_back_one_that_fails(
    server: str, atomic_requests: bool, database: str
) -> None:
    """``ATOMIC_REQUESTS``: a view that writes and raises (500) leaves nothing; the next
    one, on the same thread, commits. Without it the failed view's row stays."""
    mark = f"{server}-{atomic_requests}-{time.time_ns()}"
    graceful = {"IDLE_SYNC_THREADS": 1}
    with (
        serving(server, database, graceful, ATOMIC_REQUESTS=atomic_requests) as srv,
        srv.client() as http,
    ):
        answers = [
            http.get("/sql/pg-write/", params={"value": f"{mark}-before"}),
            http.get("/sql/pg-write/", params={"value": f"{mark}-failed", "fail": ""}),
            http.get("/sql/pg-write/", params={"value": f"{mark}-after"}),
        ]
    assert [a.status_code for a in answers] == [200, 500, 200], srv.log()
    with connect(database) as db:
        rows = db.execute(
            "SELECT value FROM graceful_rows WHERE value LIKE %s", [f"{mark}-%"]
        ).fetchall()
    kept = {f"{mark}-before", f"{mark}-after"}
    assert {value for (value,) in rows} == (kept if atomic_requests else kept | {f"{mark}-failed"})


# -- Django's connection pool -------------------------------------------------------------

#: The pool's bound (OPTIONS "pool"'s max_size), below the clients at once.
POOL_SIZE = 2


@pytest.mark.parametrize("server", ["uvicorn", "daphne"])
def test_djangos_psycopg_pool_bounds_the_backends(server: str, database: str) -> None:
    """``OPTIONS: {"pool": …}`` (Django >= 5.1; no CONN_MAX_AGE with it): each request
    borrows a pool connection and gives it back at its end, whichever thread it runs on;
    requests beyond the pool's size wait for one."""
    if importlib.util.find_spec("psycopg_pool") is None:
        pytest.skip("psycopg_pool is not installed (pip install 'psycopg[pool]')")
    pool = {"min_size": 1, "max_size": POOL_SIZE, "timeout": 30}
    with serving(server, database, CONN_MAX_AGE=0, OPTIONS={"pool": pool}) as srv:
        backends = backends_used(srv.url, requests_each=20)
    assert 1 <= len(backends) <= POOL_SIZE, backends


# -- shutdown -----------------------------------------------------------------------------


class Sessions(NamedTuple):
    """How the sessions of a database ended so far (``pg_stat_database``)."""

    ended: int
    #: Ended by the client going away without a goodbye: what the server logs as
    #: "unexpected EOF on client connection" / "could not receive data from client".
    abandoned: int


def sessions_of(database: str) -> Sessions:
    with connect() as admin:
        row = admin.execute(
            "SELECT sessions, sessions_abandoned FROM pg_stat_database WHERE datname = %s",
            [database],
        ).fetchone()
    assert row is not None, database
    return Sessions(*row)


#: Each server exits its own way (Daphne's reactor, Granian's workers, Gunicorn's arbiter).
STOPS = [
    *(
        (server, signal.SIGTERM, pool)
        for server in ("uvicorn", "gunicorn-uvicorn", "daphne", "granian", "granian-rsgi")
        for pool in (False, True)
    ),
    ("uvicorn", signal.SIGKILL, False),
]


@pytest.mark.parametrize(
    ("server", "stop", "pool"),
    STOPS,
    ids=[f"{server}-{stop.name}{'-pool' if pool else ''}" for server, stop, pool in STOPS],
)
def test_at_a_sigterm_the_threads_close_their_connections(
    server: str, stop: signal.Signals, pool: bool, database: str
) -> None:
    """After a SIGTERM no backend of the server's ends by the client's going away
    (PostgreSQL's "unexpected EOF on client connection"): each idle thread closed its
    persistent connection, and Django's pool was closed. A SIGKILL shows what the
    count looks like when they are not (every backend abandoned)."""
    if pool and importlib.util.find_spec("psycopg_pool") is None:
        pytest.skip("psycopg_pool is not installed (pip install 'psycopg[pool]')")
    wait_no_backends(database)
    before = sessions_of(database)
    pg: dict[str, Any] = {"CONN_MAX_AGE": 0, "OPTIONS": {"pool": {"max_size": 4}}} if pool else {}
    with serving(server, database, {"GRACE_PERIOD": 2, "CANCEL_TIMEOUT": 1}, **pg) as srv:
        backends = backends_used(srv.url, requests_each=10)
        srv.wait_engaged()
        srv.signal(stop)
        srv.wait_exit(15)
    wait_no_backends(database)
    after = sessions_of(database)
    assert after.ended - before.ended >= len(backends)
    abandoned = after.abandoned - before.abandoned
    if stop == signal.SIGKILL:
        assert abandoned >= len(backends)
    else:
        assert abandoned == 0, f"{abandoned} of {len(backends)} backends abandoned:\n{srv.log()}"
