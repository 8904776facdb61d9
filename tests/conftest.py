"""Fast tests run in-process against the test project; ``-m server`` ones start real servers.

pytest-django sets the test project up (``DJANGO_SETTINGS_MODULE`` in pyproject.toml) and
blocks the database: a test that queries asks for ``db``, or ``transactional_db`` when
the query runs in a thread of its own (a sync view, a cancelled statement's thread).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from django_graceful._core.lifecycle import Lifecycle, reset_lifecycle
from django_graceful._serving.handler import GracefulASGIHandler
from django_graceful.asgi import GracefulASGI

from .inprocess import Events

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """pytest-django's test databases; before they are dropped, the PostgreSQL sessions
    that views' threads left open (a cancelled request's) are ended, or DROP would fail."""
    yield
    with django_db_blocker.unblock():
        for connection in connections.all():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(END_OTHER_SESSIONS)


END_OTHER_SESSIONS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


@pytest.fixture
def lifecycle() -> Iterator[Lifecycle]:
    """A fresh process lifecycle for one test."""
    yield reset_lifecycle()
    reset_lifecycle()


@pytest.fixture
def app(lifecycle: Lifecycle) -> GracefulASGI:
    """The test project's Django app wrapped in GracefulASGI, with its own lifecycle."""
    return GracefulASGI(GracefulASGIHandler(), lifecycle=lifecycle)


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Events:
    """The test project's events (tests/project/events.py) recorded during this test."""
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv("GRACEFUL_TEST_EVENTS", str(path))

    def read(name: str) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines() if line]
        return [row for row in rows if row["event"] == name]

    return read


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket listening on 127.0.0.1 (an ephemeral port), closed after the test."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock
    sock.close()
