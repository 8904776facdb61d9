"""Under WSGI (Django's test ``Client`` is a WSGI handler) each part answers, without a
lifecycle: health, state, cancellation, ``@cancellable``, spawn, threads, hooks, checkshutdown."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from django_graceful._core import wsgi
from django_graceful._core.lifecycle import Lifecycle
from django_graceful._core.phases import Phase
from django_graceful._core.registry import Tracked, WorkKind
from django_graceful.management.commands.checkshutdown import WSGI_HINT
from django_graceful.views import WSGI_BODY

from .inprocess import Events

WSGI_TASK_THREAD = "django_graceful-wsgi-tasks"


@pytest.fixture
def fresh(lifecycle: Lifecycle, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lifecycle]:
    """A lifecycle that never started (as under WSGI), and a process that has served no
    WSGI request yet (its one-time notice not logged)."""
    monkeypatch.setattr(wsgi, "_noticed", False)
    yield lifecycle


def wait_for(found: Callable[[], list[dict[str, Any]]], timeout: float = 5) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while not (rows := found()):
        assert time.monotonic() < deadline, f"nothing within {timeout} s"
        time.sleep(0.01)
    return rows


@pytest.mark.parametrize("probe", ["ready", "live"])
def test_health_says_serving_over_wsgi_with_no_lifecycle(fresh: Lifecycle, probe: str) -> None:
    response = Client().get(f"/health/{probe}/")
    assert response.status_code == 200
    assert (
        response.json() == WSGI_BODY == {"phase": "serving", "server": "wsgi", "lifecycle": False}
    )
    assert "no-cache" in response["Cache-Control"]


def test_health_follows_a_lifecycle_that_runs_in_the_process(fresh: Lifecycle) -> None:
    """A lifecycle started in this process (a test's lifespan) is what readiness tells."""
    fresh.phase = Phase.DRAINING
    response = Client().get("/health/ready/")
    assert response.status_code == 503 and response.json() == {"phase": "draining"}


def test_reading_missing_state_names_the_managers_that_did_not_run(fresh: Lifecycle) -> None:
    with pytest.raises(wsgi.LifespanStateUnavailable) as raised:
        Client().get("/state/")  # the view reads request.state["pool"]
    assert isinstance(raised.value, KeyError)
    message = str(raised.value)
    assert message.startswith("request.state['pool']: this request came through WSGI")
    assert "the LIFESPAN managers (tests.project.lifespan.resources) did not run" in message


def test_state_under_the_test_client_while_a_lifespan_runs_says_where_it_is(
    fresh: Lifecycle,
) -> None:
    fresh.phase = Phase.SERVING
    with pytest.raises(wsgi.LifespanStateUnavailable, match="to ASGI requests only"):
        Client().get("/state/")


def test_a_sync_view_gets_an_empty_state_and_a_token_not_cancelled(fresh: Lifecycle) -> None:
    response = Client().get("/wsgi/token/")
    assert response.json() == {
        "cancelled": False,
        "current": False,
        "shutting_down": False,
        "state": {},
    }


def test_the_first_wsgi_request_says_once_what_does_not_run(
    fresh: Lifecycle, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "django_graceful"):
        Client().get("/wsgi/token/")
        Client().get("/wsgi/token/")
    [notice] = [r for r in caplog.records if "serves WSGI" in r.getMessage()]
    assert notice.levelno == logging.WARNING
    message = notice.getMessage()
    assert "LIFESPAN managers (tests.project.lifespan.resources)" in message
    assert "tests.project.hooks.started" in message  # an @on_startup hook
    assert "tests.project.hooks.flushed" in message  # an @on_shutdown hook


def test_no_hook_and_no_lifespan_runs_under_wsgi(fresh: Lifecycle, recorded: Events) -> None:
    assert Client().get("/health/ready/").status_code == 200
    assert Client().get("/wsgi/token/").status_code == 200
    assert fresh.phase == Phase.NEW
    assert recorded("startup") == [] and recorded("lifespan-enter") == []


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/wsgi/sync-guarded/", 200),
        ("/wsgi/async-guarded/", 200),  # with a shield() inside
        ("/sync-timed/", 504),
        ("/timed/", 504),
        ("/class-timed/", 504),
    ],
)
def test_cancellable_views_answer_and_time_out(fresh: Lifecycle, path: str, status: int) -> None:
    assert Client().get(path).status_code == status


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/wsgi/spawn/", "sync"),
        ("/wsgi/spawn-async/", "async"),
        ("/wsgi/spawn-streaming/", "streaming"),  # from the response's iterator
    ],
)
def test_a_spawned_task_outlives_its_request_on_our_task_loop(
    fresh: Lifecycle, recorded: Events, path: str, label: str
) -> None:
    response = Client().get(path)
    assert response.status_code == 200
    assert response.getvalue()  # a streaming response's iterator runs now
    [ran] = wait_for(lambda: recorded("wsgi-task-ran"))
    assert ran["label"] == label and ran["thread"] == WSGI_TASK_THREAD
    assert recorded("wsgi-task-cancelled") == []  # the view's own loop ended long before


def test_at_exit_threads_are_told_to_stop_and_tasks_cancelled(
    fresh: Lifecycle, recorded: Events
) -> None:
    thread = Client().get("/wsgi/thread/").json()
    assert thread == {"thread": "waits-for-stop", "alive": True}
    assert Client().get("/wsgi/spawn-forever/").status_code == 200
    assert len(fresh.registry) == 2
    wsgi.at_exit()
    assert recorded("wsgi-thread-stopped") and recorded("wsgi-task-cancelled")
    assert len(fresh.registry) == 0


def test_checkshutdown_says_wsgi_processes_write_no_snapshot(
    fresh: Lifecycle, tmp_path: Path, settings: Any
) -> None:
    settings.GRACEFUL = {"STATE_DIR": str(tmp_path / "state")}
    assert Client().get("/wsgi/token/").status_code == 200
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("checkshutdown", stdout=out, stderr=err)
    assert exited.value.code == 2
    assert "cannot check: no state found" in out.getvalue()
    assert WSGI_HINT in err.getvalue()


def test_at_exit_waits_for_no_thread_that_did_not_come_along_a_fork(
    fresh: Lifecycle, caplog: pytest.LogCaptureFixture
) -> None:
    """Gunicorn's ``--preload``: a thread started in the arbiter is in the registry each
    worker inherits, but not running there."""
    item = Tracked(WorkKind.THREAD, "started-before-the-fork")
    item.thread = threading.Thread(target=lambda: None)  # never started in this process
    fresh.registry.add(item)
    with caplog.at_level(logging.INFO, "django_graceful"):
        wsgi.at_exit()
    assert not [r for r in caplog.records if r.getMessage().startswith("exit:")]


def test_at_exit_a_shield_in_a_spawned_task_holds_the_cancel_back(
    fresh: Lifecycle, recorded: Events
) -> None:
    assert Client().get("/wsgi/spawn-committer/").status_code == 200
    wait_for(lambda: recorded("wsgi-task-committing"))
    wsgi.at_exit()
    assert recorded("wsgi-task-committed")  # the cancel waited for the shield's end
    assert recorded("wsgi-task-cancelled")  # ... and then landed
    assert len(fresh.registry) == 0


@pytest.mark.parametrize(
    "path", ["/sql/sqlite-timed/?n=20000000", "/sql/sqlite-async-timed/?n=20000000"]
)
def test_a_timed_out_view_s_sql_statement_is_interrupted(
    fresh: Lifecycle, transactional_db: None, recorded: Events, path: str
) -> None:
    """``@cancellable(timeout=0.5)``: the statement stops on the database at the timeout."""
    assert Client().get(path).status_code == 504
    [interrupted] = recorded("sql-interrupted")
    assert interrupted["reason"] == "timeout"


def test_a_transaction_left_open_is_closed_before_the_thread_serves_again(
    fresh: Lifecycle, transactional_db: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A WSGI server's thread serves request after request: a view that entered an atomic
    block and never left it must not make the next ones there fail ("Cannot operate on a
    closed database")."""
    client = Client()
    assert client.get("/thread/?leave-transaction").status_code == 200
    assert [client.get("/thread/?query").status_code for _ in range(3)] == [200] * 3
    assert "left a transaction open on database 'default'" in caplog.text
