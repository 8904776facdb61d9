"""A pytest plugin for projects: their app's lifespan, requests and shutdown in-process
(``graceful_app``), a shutdown drill (``shutdown_drill``), a real server for the session
whose stop is checked (``graceful_live_server``).

Installed with the package (a ``pytest11`` entry point): the fixtures are there with no
conftest line. It works with pytest-django (whose ``settings`` fixture changes what a
``graceful_app``'s lifecycle reads) and without it. Importing it imports neither Django
nor the project: every fixture imports what it needs when a test asks for it, so any
pytest run of a project that installed the package, Django configured or not, is
unaffected. The helpers behind the fixtures are importable from here too
(``from django_graceful.testing import GracefulTestApp, run_drill``).

In-process, through asgiref's ``ApplicationCommunicator`` (fast, no server)::

    async def test_report_stops_when_the_client_leaves(graceful_app):
        async with graceful_app.lifespan():
            request = await graceful_app.open("/report/")
            await asyncio.sleep(0.2)                  # the view is running
            await request.disconnect()                # the client goes away
            await request.finished(timeout=2)         # ... and the view stopped

    async def test_a_short_grace_period_cancels_the_report(graceful_app, settings):
        settings.GRACEFUL = {"GRACE_PERIOD": 0.1}     # pytest-django's fixture
        async with graceful_app.lifespan():
            request = await graceful_app.open("/report/")
            await graceful_app.shutdown()             # what SIGTERM starts
            assert (await request.response()).status == 503

On a real server (``manage.py checkshutdown --drill`` as a fixture)::

    def test_no_view_hangs_a_deploy(shutdown_drill):
        drill = shutdown_drill(["/report/", "/export/"], server="uvicorn")
        assert not drill.hung, drill.summary

    def test_the_home_page(graceful_live_server):      # one server for the session
        assert httpx.get(graceful_live_server + "/").status_code == 200

``graceful_live_server`` runs Uvicorn unless ``--graceful-server`` (or the ini value
``graceful_server``) names another (``granian-rsgi``, ``gunicorn-asgi``: Granian's RSGI
interface, Gunicorn's own worker); at the end of the session it gets SIGTERM, and work
that did not stop fails the session, naming it and its line.

Each ``graceful_app`` starts from a fresh process lifecycle and never installs signal
handlers in the test process. Its methods are coroutines: run them in async tests
(pytest-asyncio, anyio). A view that queries from a thread of its own (a sync view)
needs pytest-django's ``transactional_db``: ``db``'s transaction is the test thread's.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._testing.drill import DrillOutcome, run_drill
    from ._testing.inprocess import (
        TIMEOUT,
        GracefulTestApp,
        HungAfterShutdown,
        InFlight,
        LifespanFailed,
        Response,
        Shutdown,
        project_application,
    )
    from ._testing.live_server import GracefulLiveServer, ShutdownNotClean

#: The helpers, by the module of ``django_graceful._testing`` that holds each: imported
#: when first used (``from django_graceful.testing import GracefulTestApp``).
HELPERS = {
    "TIMEOUT": "inprocess",
    "GracefulTestApp": "inprocess",
    "HungAfterShutdown": "inprocess",
    "InFlight": "inprocess",
    "LifespanFailed": "inprocess",
    "Response": "inprocess",
    "Shutdown": "inprocess",
    "project_application": "inprocess",
    "DrillOutcome": "drill",
    "run_drill": "drill",
    "GracefulLiveServer": "live_server",
    "ShutdownNotClean": "live_server",
}
#: The server ``graceful_live_server`` runs unless ``--graceful-server`` names another.
DEFAULT_LIVE_SERVER = "uvicorn"

__all__ = [
    "TIMEOUT",
    "DrillOutcome",
    "GracefulLiveServer",
    "GracefulTestApp",
    "HungAfterShutdown",
    "InFlight",
    "LifespanFailed",
    "Response",
    "Shutdown",
    "ShutdownNotClean",
    "project_application",
    "run_drill",
]


def __getattr__(name: str) -> Any:
    module = HELPERS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__package__}._testing.{module}"), name)


try:
    import pytest
except ImportError:  # pragma: no cover - the helpers work without pytest
    pass
else:

    def pytest_addoption(parser: pytest.Parser) -> None:
        help = "the ASGI server of graceful_live_server: uvicorn (default), hypercorn, "
        help += "granian, daphne or gunicorn, or a kind: granian-rsgi, gunicorn-asgi"
        group = parser.getgroup("django_graceful")
        group.addoption("--graceful-server", dest="graceful_server", default=None, help=help)
        parser.addini("graceful_server", help=help, default=DEFAULT_LIVE_SERVER)

    @pytest.fixture
    def graceful_app() -> Iterator[GracefulTestApp]:
        """The project's ASGI app in-process, on a fresh lifecycle (restored afterwards);
        the lifecycle reads the settings when the app starts, after the test's changes."""
        from ._core.lifecycle import reset_lifecycle
        from ._testing.inprocess import GracefulTestApp, project_application

        lifecycle = reset_lifecycle()
        try:
            yield GracefulTestApp(project_application(), lifecycle)
        finally:
            reset_lifecycle()

    @pytest.fixture
    def shutdown_drill() -> Callable[..., DrillOutcome]:
        """``shutdown_drill(urls, server=, concurrency=)``: a real server's shutdown drill."""
        from ._testing.drill import run_drill

        return run_drill

    @pytest.fixture(scope="session")
    def graceful_live_server(request: pytest.FixtureRequest) -> Iterator[GracefulLiveServer]:
        """The project on a real ASGI server for the session (``.url``); at its end the
        server gets SIGTERM, and work that did not stop fails the session."""
        __tracebackhide__ = True  # a failure shows the server's verdict, not this code
        from ._diagnosis.drill.model import DrillError
        from ._testing.live_server import GracefulLiveServer

        config = request.config
        server = config.getoption("graceful_server") or config.getini("graceful_server")
        try:
            live = GracefulLiveServer(str(server or DEFAULT_LIVE_SERVER))
        except DrillError as exc:
            tail = "".join(f"\nserver: {line}" for line in exc.tail)
            pytest.fail(f"graceful_live_server could not start: {exc}{tail}", pytrace=False)
        yield live
        live.check_stop()
