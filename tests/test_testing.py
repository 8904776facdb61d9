"""django_graceful.testing as a project uses it: a pytest plugin, its fixtures, its failures."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = """
import os

import django

os.environ["DJANGO_SETTINGS_MODULE"] = "example_project.settings"
django.setup()

pytest_plugins = ["django_graceful.testing"]
"""

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
"""


def test_a_projects_tests_drive_requests_disconnects_and_shutdowns(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("GRACEFUL_GRACE_PERIOD", "0.5")
    monkeypatch.setenv("GRACEFUL_CANCEL_TIMEOUT", "0.5")
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_user=textwrap.dedent(USER_TESTS))
    result = pytester.runpytest_subprocess("-p", "asyncio", "-q", "-rf", timeout=60)
    result.assert_outcomes(passed=4, failed=2)
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
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("GRACEFUL_GRACE_PERIOD", "1")
    monkeypatch.setenv("GRACEFUL_CANCEL_TIMEOUT", "1")
    monkeypatch.setenv("EXAMPLE_STATE_DIR", str(pytester.path / "state"))
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_deploy=DRILL_TESTS % stubborn_line())
    result = pytester.runpytest_subprocess("-q", "-rf", timeout=90)
    result.assert_outcomes(passed=2)
