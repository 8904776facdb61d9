"""Under faults: a view that swallows every cancel still leaves its client a whole answer.

Whatever the server, the client of a request whose view ignores every cancel gets a whole
503 with ``Connection: close`` at STOPPED (the lifecycle answers through the ``send`` the
server gave the app), never a closed connection without an answer, and the server exits
within the budget.
"""

from __future__ import annotations

import pytest

from .servers import (
    SERVERS,
    Server,
    answered,
    lifespan_complaints,
    start_with,
    stop_holding_a_stubborn_request,
)

GRACEFUL = {"GRACE_PERIOD": 1, "CANCEL_TIMEOUT": 1}
#: Grace + cancel (the hooks return at once): when the hung request is answered.
STOPPED_AFTER = 2
#: Seconds the server may then take to exit on a busy machine: far below the watchdog's
#: bound (the whole budget, with the hooks' timeouts, + 1 s), which a hung request that
#: held the server would reach.
EXIT_AFTER_STOPPED = 2.5


@pytest.mark.server
@pytest.mark.parametrize("server", SERVERS)
def test_a_view_that_swallows_every_cancel_gets_a_whole_503(server: str) -> None:
    srv = start_with(Server(server, graceful=GRACEFUL))
    try:
        _, log, response = stop_holding_a_stubborn_request(srv, timeout=STOPPED_AFTER + 15)
        reply = answered(response, 503, log)
        assert reply.headers["connection"] == "close"
        assert reply.text == "Service is shutting down.\n"
        assert srv.exit_after < STOPPED_AFTER + EXIT_AFTER_STOPPED, log
        assert lifespan_complaints(log) == []
    finally:
        srv.kill()
