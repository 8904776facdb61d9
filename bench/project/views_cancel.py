"""A view that waits until cancelled and says when, over UDP to bench/cancel.py (plain Django).

The view takes ``time.monotonic_ns()`` first and sends it afterwards, so the datagram's
transport adds nothing to the measured time. ``CLOCK_MONOTONIC`` is one clock for the
whole machine (Linux), so the benchmark compares it with its own readings.
"""

import asyncio
import contextlib
import os
import socket
import time

from django.http import HttpRequest, HttpResponse

#: How long the view waits if nothing cancels it: a bound, not a target.
WAIT_CAP = 30.0

_probe: tuple[socket.socket, tuple[str, int]] | None = None


def _target() -> tuple[socket.socket, tuple[str, int]] | None:
    """The probe's socket and address (``BENCH_PROBE=127.0.0.1:port``), made on first use."""
    global _probe
    if _probe is None:
        host, sep, port = os.environ.get("BENCH_PROBE", "").rpartition(":")
        if not sep:
            return None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        _probe = sock, (host, int(port))
    return _probe


def probe(event: str, request: HttpRequest, detail: str = "-") -> None:
    """Send ``event n monotonic_ns detail`` (``n``: the request's ``?n=``) to the probe."""
    now = time.monotonic_ns()
    target = _target()
    if target is not None:
        sock, address = target
        message = f"{event} {request.GET.get('n', '-')} {now} {detail}"
        with contextlib.suppress(OSError):  # a lost datagram shows as a missed iteration
            sock.sendto(message.encode(), address)


async def wait(request: HttpRequest) -> HttpResponse:
    """Report ``started``, wait (at most ``WAIT_CAP``), report ``cancelled`` when cancelled."""
    probe("started", request)
    try:
        await asyncio.sleep(WAIT_CAP)
    except asyncio.CancelledError:
        probe("cancelled", request)
        raise
    return HttpResponse(b"not cancelled\n", content_type="text/plain")
