"""Behind a real balancer (nginx, HAProxy; the recipes of deploy/), a rolling restart of
two servers of one kind loses no request: every GET on a fresh connection and every
16 KiB POST on a kept-alive one is answered 200, whole.

What each balancer is given to make that so (tests/balancers.py runs it):

- HAProxy checks ``/health/ready/`` every 0.2 s and takes a server out after 2 failures
  (Kubernetes' readinessProbe ``periodSeconds`` and ``failureThreshold``, made fast), so
  ``DRAIN_DELAY`` 1 s covers it: HAProxy has stopped sending to a server before that
  server answers anything with 503. It retries a connection refused, and a 503, on the
  other server.
- nginx (open source) has no active check: it sends to the stopping server until that
  server refuses the connection (on a Unix socket, from CLOSING on: what still reaches
  the server is served) or answers 503 (over TCP, for a request it did not run), and
  sends those requests to the other server; over TCP POSTs too, with ``non_idempotent``
  added as the recipe says.

A server gets its shutdown budget + 2 s to exit after SIGTERM (Kubernetes'
``terminationGracePeriodSeconds``, the least ``checkshutdown --budget`` prints), else it is
killed and the test fails. The whole matrix (every server kind x balancer x transport, and
plain Django) is bench/balancer.py's: here each server kind runs once, the balancers and
transports taken in turn.
"""

from __future__ import annotations

import signal

import pytest

from django_graceful._diagnosis.budget import Probe

from .balancers import CHECK_FALL, CHECK_INTERVAL, RollingRestart, breakdown, missing
from .servers import SERVERS

pytestmark = pytest.mark.server

#: Short phases: a restart takes about the drain delay and a server's start.
PHASES = {"DRAIN_DELAY": 1, "GRACE_PERIOD": 2, "CANCEL_TIMEOUT": 1, "HOOK_TIMEOUT": 0.5}
GETS, POSTS = 4, 4
#: What the door logs as it shuts (see tests/test_deploy_servers.py).
SHUT_LINE = "listening sockets: shut to new connections; every queued connection answered"
QUEUED_LINE = "accepted by the kernel were still waiting"

#: (server kind, balancer, transport): each kind once; the balancers and the transports
#: each several times. Gunicorn + Uvicorn workers behind nginx on a Unix socket is
#: Django's most common deployment.
CASES = [
    ("uvicorn", "haproxy", "tcp"),
    ("hypercorn", "nginx", "unix"),
    ("granian", "nginx", "tcp"),
    ("granian-rsgi", "haproxy", "unix"),
    ("daphne", "nginx", "tcp"),
    ("gunicorn-uvicorn", "nginx", "unix"),
    ("gunicorn-asgi", "haproxy", "unix"),
]
assert sorted({case[0] for case in CASES}) == sorted(SERVERS)


def test_the_drain_delay_covers_haproxy_s_check() -> None:
    """What ``checkshutdown --budget --readiness-period 0.2 --failure-threshold 2`` checks,
    for the settings below (one interval more: a check under way at the signal passes)."""
    probe = Probe(CHECK_INTERVAL, CHECK_FALL, endpoint_delay=CHECK_INTERVAL)
    assert PHASES["DRAIN_DELAY"] >= probe.least_drain


@pytest.mark.parametrize(("server", "balancer", "transport"), CASES)
def test_a_rolling_restart_behind_a_balancer_loses_no_request(
    server: str, balancer: str, transport: str
) -> None:
    if reason := missing(balancer):
        pytest.skip(reason)
    retry_posts = balancer == "nginx" and transport == "tcp"  # as the recipe says
    with RollingRestart(balancer, server, transport, PHASES, retry_posts=retry_posts) as roll:
        clients = roll.roll(GETS, POSTS)
        logs = roll.logs()
        errors = clients.errors()
        assert not errors, f"{len(errors)} of {clients.count()}: {breakdown(errors)}\n{logs}"
        served = {o.method for o in clients.outcomes if o.ok}
        assert served == {"GET", "POST"}, breakdown(clients.outcomes)
        for restart in roll.restarts:
            log = restart.stopped.log()
            # 0, or SIGTERM's own status (Uvicorn raises the signal again once it stopped);
            # never the watchdog's 1.
            assert restart.exit_code in (0, -signal.SIGTERM), (restart.exit_code, log)
            assert restart.stopped.events("shutdown"), log  # the hooks ran: a whole shutdown
            assert QUEUED_LINE not in log, log
            assert SHUT_LINE in log, log  # the door shut, then every queued one was answered
