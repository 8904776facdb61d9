"""django_graceful.testing as a project uses it: a pytest plugin installed with the package,
its fixtures under pytest-django, its failures."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: A project's pytest configuration: pytest-django's, and nothing of django_graceful.
INI = """
[pytest]
DJANGO_SETTINGS_MODULE = example_project.settings
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester folder that sees the example project, with its pytest-django ini and
    neither a conftest nor ``DJANGO_SETTINGS_MODULE`` in the environment."""
    without_settings(monkeypatch)
    pytester.makeini(INI)
    return pytester


def without_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of a pytest run that sees this package (and the example project),
    with no ``DJANGO_SETTINGS_MODULE``."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), path])))
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)


def short_shutdown(
    monkeypatch: pytest.MonkeyPatch, seconds: str, state_dir: Path | None = None
) -> None:
    """The example project's grace and cancel timeout, ``seconds`` each, and its state folder
    (for its snapshots) if given."""
    monkeypatch.setenv("GRACEFUL_GRACE_PERIOD", seconds)
    monkeypatch.setenv("GRACEFUL_CANCEL_TIMEOUT", seconds)
    if state_dir is not None:
        monkeypatch.setenv("EXAMPLE_STATE_DIR", str(state_dir))


def test_importing_the_plugin_imports_neither_django_nor_the_project() -> None:
    code = "import sys, django_graceful.testing\n"
    code += "print(sorted(m for m in sys.modules if m.partition('.')[0] in ('django', 'tests')))"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_a_project_without_django_settings_runs_its_tests_with_the_plugin_installed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_settings(monkeypatch)
    pytester.makepyfile(test_plain="def test_sum():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest_subprocess("-q", "--fixtures", timeout=60)
    result.stdout.fnmatch_lines(["graceful_app*", "shutdown_drill*", "graceful_live_server*"])
    result = pytester.runpytest_subprocess("-q", "--graceful-server", "daphne", timeout=60)
    result.assert_outcomes(passed=1)


USER_TESTS = """
import asyncio
import time

import pytest

pytestmark = pytest.mark.asyncio


async def test_a_short_request_finishes_during_the_shutdown(graceful_app):
    async with graceful_app.lifespan():
        request = await graceful_app.open("/slow/?seconds=0.3")
        await asyncio.sleep(0.05)
        stopped = await graceful_app.shutdown()
        response = await request.response()
    assert response.status == 200 and response.text == "slept 0.3 s\\n"
    assert stopped.message == {"type": "lifespan.shutdown.complete"}
    assert 0.2 < stopped.seconds < 2


async def test_a_long_request_is_cancelled_by_the_shutdown(graceful_app):
    async with graceful_app.lifespan():
        request = await graceful_app.open("/slow/?seconds=60")
        await asyncio.sleep(0.05)
        stopped = await graceful_app.shutdown()
        response = await request.response()
    assert response.status == 503
    assert stopped.seconds < 2  # GRACE_PERIOD 0.5 + CANCEL_TIMEOUT 0.5 in this run


async def test_the_sync_export_stops_when_the_client_leaves(graceful_app):
    async with graceful_app.lifespan():
        request = await graceful_app.open("/export/?rows=100000")
        await asyncio.sleep(0.2)
        left = time.monotonic()
        await request.disconnect()
        await request.finished(timeout=2)
        assert time.monotonic() - left < 1


async def test_state_from_the_lifespan_reaches_the_view(graceful_app):
    async with graceful_app.lifespan() as state:
        response = await graceful_app.get("/state/")
    assert response.status == 200 and response.headers["content-type"] == "application/json"
    assert response.text == '{"pool": "example-pool", "open": true}'
    assert state["pool"]["open"] is False  # closed by the shutdown


async def test_a_view_that_will_not_stop_fails_the_test(graceful_app):
    async with graceful_app.lifespan():
        request = await graceful_app.open("/stubborn/")
        await asyncio.sleep(0.05)
        await request.disconnect()
        await request.finished(timeout=0.5)


async def test_a_view_that_hangs_the_shutdown_fails_the_test(graceful_app):
    async with graceful_app.lifespan():
        await graceful_app.open("/stubborn/")
        await asyncio.sleep(0.05)


async def test_the_settings_fixture_sets_the_grace_period(graceful_app, settings):
    settings.GRACEFUL = {**settings.GRACEFUL, "GRACE_PERIOD": 0.1, "CANCEL_TIMEOUT": 0.2}
    async with graceful_app.lifespan():
        request = await graceful_app.open("/slow/?seconds=0.3")
        await asyncio.sleep(0.05)
        stopped = await graceful_app.shutdown()
        response = await request.response()
    assert response.status == 503  # cancelled after 0.1 s, not let finish as with 0.5
    assert stopped.seconds < 0.3


async def test_the_report_query_stops_in_the_database_when_the_client_leaves(
    graceful_app, transactional_db
):
    async with graceful_app.lifespan():
        request = await graceful_app.open("/report/")
        await asyncio.sleep(0.3)  # the query runs, in the view's own thread
        left = time.monotonic()
        await request.disconnect()
        await request.finished(timeout=2)
        assert time.monotonic() - left < 1


async def test_without_transactional_db_the_query_is_refused(graceful_app):
    async with graceful_app.lifespan():
        response = await graceful_app.get("/report/")
    assert response.status == 500  # pytest-django: "Database access not allowed"
"""


def test_a_projects_tests_drive_requests_disconnects_and_shutdowns(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    short_shutdown(monkeypatch, "0.5")
    project.makepyfile(test_user=textwrap.dedent(USER_TESTS))
    result = project.runpytest_subprocess("-q", "-rf", timeout=60)
    result.assert_outcomes(passed=7, failed=2)
    result.stdout.fnmatch_lines(["*AssertionError: the request was still running after 0.5 s"])
    result.stdout.fnmatch_lines(
        [
            "*HungAfterShutdown: 1 piece(s) of work did not stop at the shutdown:",
            "*request GET /stubborn/, view example_project.views.stubborn (cancelled *x, *"
            f" at *example_project/views.py:{stubborn_line()} in stubborn",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "FAILED test_user.py::test_a_view_that_will_not_stop_fails_the_test - Assertio*",
            "FAILED test_user.py::test_a_view_that_hangs_the_shutdown_fails_the_test - *",
        ]
    )


def stubborn_line() -> int:
    """The line of the ``await`` in the example's stubborn view (where its loop waits)."""
    from example_project import views

    lines, first = inspect.getsourcelines(views.stubborn)
    return next(first + n for n, line in enumerate(lines) if "await asyncio.sleep" in line)


DRILL_TESTS = """
def test_the_stubborn_view_hangs_a_deploy(shutdown_drill):
    drill = shutdown_drill(["/stubborn/"])
    assert drill.hung and drill.status == 1
    row = drill.summary.splitlines()[1]
    assert row.startswith("  example_project.views.stubborn (GET /stubborn/): swallowed-cancel")
    assert row.endswith("example_project/views.py:%d in stubborn")


def test_no_other_view_hangs_a_deploy(shutdown_drill):
    drill = shutdown_drill(["/slow/", "/export/"], server="daphne", concurrency=2)
    assert not drill.hung, drill.summary
    assert drill.status == 0 and drill.data["exit"]["within_budget"] is True
"""


@pytest.mark.server
def test_a_projects_ci_drills_its_shutdown_on_a_real_server(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    short_shutdown(monkeypatch, "1", project.path / "state")
    project.makepyfile(test_deploy=DRILL_TESTS % stubborn_line())
    result = project.runpytest_subprocess("-q", "-rf", timeout=90)
    result.assert_outcomes(passed=2)


LIVE_TESTS = """
import threading
import time
import urllib.request


def test_the_home_page_is_served(graceful_live_server):
    with urllib.request.urlopen(graceful_live_server + "/", timeout=5) as response:
        assert response.status == 200
        assert response.read().startswith(b"Hello from django_graceful")
"""

LIVE_HUNG_TESTS = """

def test_a_stubborn_request_is_left_running(graceful_live_server):
    def call():
        try:
            urllib.request.urlopen(graceful_live_server.url + "/stubborn/", timeout=30).read()
        except OSError:
            pass  # the server is ended at the session's end

    threading.Thread(target=call, daemon=True).start()
    time.sleep(0.5)  # in the view
"""


def test_the_live_servers_server_is_chosen_on_the_command_line(project: pytest.Pytester) -> None:
    project.makepyfile(test_live="def test_up(graceful_live_server):\n    pass\n")
    result = project.runpytest_subprocess("-q", "--graceful-server", "nginx", timeout=60)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*graceful_live_server could not start: unknown server 'nginx'; choose from uvicorn*"]
    )


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("uvicorn", {"server": "uvicorn", "worker_class": None}),
        ("gunicorn", {"server": "gunicorn", "worker_class": None}),
        ("nginx", {"server": "nginx", "worker_class": None}),
        ("granian-rsgi", {"server": "granian", "worker_class": None, "interface": "rsgi"}),
        ("gunicorn-asgi", {"server": "gunicorn", "worker_class": "asgi", "interface": None}),
    ],
)
def test_the_live_server_takes_a_server_or_a_kind(name: str, options: dict[str, Any]) -> None:
    """``--graceful-server granian-rsgi``: the drill's ``--server granian --interface rsgi``."""
    from django_graceful._testing.live_server import drill_options

    assert drill_options(name) == options


@pytest.mark.server
def test_the_live_server_serves_and_its_stop_fails_the_session_on_a_hung_request(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    short_shutdown(monkeypatch, "0.5", project.path / "state")
    project.makepyfile(test_live=LIVE_TESTS)
    result = project.runpytest_subprocess("-q", "-rfE", timeout=90)
    result.assert_outcomes(passed=1)

    project.makepyfile(test_live=LIVE_TESTS + LIVE_HUNG_TESTS)
    result = project.runpytest_subprocess("-q", "-rfE", timeout=90)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ShutdownNotClean: graceful_live_server (uvicorn): 1 problem: 1 swallowed-cancel *",
            "*  example_project.views.stubborn (GET /stubborn/): swallowed-cancel at "
            f"*example_project/views.py:{stubborn_line()} in stubborn",
        ]
    )
