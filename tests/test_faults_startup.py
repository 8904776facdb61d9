"""Under faults: a stop signal while a lazy startup is still running.

Daphne sends no lifespan (nor does Uvicorn with ``--lifespan off``): the first request
runs the startup. A SIGTERM while its hooks and LIFESPAN managers are still entering is
ours all the same: the startup ends (its hooks are bounded), then the shutdown runs, every
entered manager exits, the shutdown hooks run, and every client gets a whole answer or a
refused connection.
"""

from __future__ import annotations

import pytest

from .servers import Server, get_or_error, in_background, start_with

#: The lazy servers, with the arguments that make them lazy.
LAZY = {"daphne": (), "uvicorn": ("--lifespan", "off")}


def whole_or_refused(result: object, log: str) -> None:
    """A response (200 served, or 503 + Connection: close), or a refused connection."""
    if isinstance(result, Exception):
        assert "refused" in str(result).lower(), (result, log)
        return
    status = getattr(result, "status_code", None)
    assert status in (200, 503), (result, log)


@pytest.mark.server
@pytest.mark.parametrize("server", LAZY)
def test_sigterm_during_a_lazy_startup_runs_the_shutdown_after_it(server: str) -> None:
    app = "tests.project.asgi_slow_startup:application"  # a 1 s startup hook
    srv = start_with(Server(server, app=app, graceful={"GRACE_PERIOD": 2}), *LAZY[server])
    try:
        first = in_background(get_or_error, srv, "/pid/", 10)
        srv.wait_event("slow-startup-begin")
        assert srv.events("lifespan-enter")  # entered before the hook began
        srv.signal()
        late = in_background(get_or_error, srv, "/pid/", 10)
        assert srv.wait_exit(15) in (0, -15), srv.log()
        log = srv.log()
        whole_or_refused(first.result(timeout=5), log)
        whole_or_refused(late.result(timeout=5), log)
        assert srv.events("slow-startup-end"), log
        assert srv.events("lifespan-exit"), log
        assert srv.events("shutdown"), log
        assert srv.exit_after < 1 + 2 + 2, log
    finally:
        srv.kill()
