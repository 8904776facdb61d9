"""On real WSGI servers (runserver without Daphne, Gunicorn's sync and gthread workers):
health answers 200, a view reading the LIFESPAN state gets a clear error, spawned work runs,
the exit stops the background work; checkshutdown says no ASGI worker wrote a snapshot."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from django_graceful.management.commands.checkshutdown import WSGI_HINT
from django_graceful.views import WSGI_BODY

from .servers import ROOT, WSGI_SERVERS, Server

pytestmark = pytest.mark.server

#: How each server is stopped as its users stop it: Ctrl-C on runserver (SIGTERM would end
#: it at once: Python's default), SIGTERM to Gunicorn's arbiter.
STOP_SIGNAL = {
    "runserver": signal.SIGINT,
    "gunicorn-sync": signal.SIGTERM,
    "gunicorn-gthread": signal.SIGTERM,
}


@pytest.mark.parametrize("server", WSGI_SERVERS)
def test_a_wsgi_server_serves_the_project_and_its_exit_stops_the_background_work(
    server: str, tmp_path: Path
) -> None:
    srv = Server(
        server,
        graceful={"STATE_DIR": str(tmp_path / "state")},
        env={"GRACEFUL_TEST_DEBUG": "1"},  # as a developer runs runserver: a 500 says why
    )
    try:
        srv.start()
        for probe in ("ready", "live"):
            response = srv.get(f"/health/{probe}/")
            assert (response.status_code, response.json()) == (200, WSGI_BODY), srv.log()
        state = srv.get("/state/")  # the view reads request.state["pool"]
        assert state.status_code == 500
        assert "LifespanStateUnavailable" in state.text
        assert "the LIFESPAN managers (tests.project.lifespan.resources) did not run" in state.text
        assert srv.get("/wsgi/token/").json()["state"] == {}
        assert srv.get("/wsgi/spawn/").status_code == 200
        assert srv.get("/wsgi/spawn-async/").status_code == 200
        assert srv.get("/wsgi/thread/").json()["alive"] is True
        assert srv.get("/wsgi/spawn-forever/").status_code == 200
        ran = srv.wait_event("wsgi-task-ran", count=2)
        assert {row["label"] for row in ran} == {"sync", "async"}

        result = subprocess.run(
            [sys.executable, "-m", "django", "checkshutdown"],
            cwd=ROOT,
            env=srv.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2 and WSGI_HINT in result.stderr, result

        srv.signal(STOP_SIGNAL[server])
        assert srv.wait_exit(20) == 0, srv.log()
    finally:
        srv.kill()
    assert srv.events("wsgi-thread-stopped") and srv.events("wsgi-task-cancelled")
    log = srv.log()
    assert log.count("this process serves WSGI") == 1, log
    assert "still running" not in log
    assert srv.events("startup") == [] and srv.events("lifespan-enter") == []
