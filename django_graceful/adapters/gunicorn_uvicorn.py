"""Gunicorn with the Uvicorn worker (``-k uvicorn_worker.UvicornWorker``): the Uvicorn
adapter, inside gunicorn's ways of stopping a worker.

uvicorn-worker (0.4.0 read and run; ``uvicorn_worker/_workers.py``) runs
``uvicorn.server.Server.serve`` in each gunicorn worker: uvicorn installs its SIGTERM/SIGINT
handlers, counts ``max_requests`` itself (``Server.on_tick`` ends the main loop once
``server_state.total_requests`` reaches ``limit_max_requests``, with no signal), sends the
heartbeat from that main loop (``callback_notify``), passes no
``timeout_graceful_shutdown`` (so uvicorn waits for requests forever), and handles SIGQUIT
with the Worker's ``handle_exit`` (it only sets ``alive = False``: uvicorn never reads it).
Reaching ``max_requests`` uvicorn closes every connection at once, also those whose
request it has not read yet: their clients get a reset.

On top of the Uvicorn adapter (``adapters/uvicorn.py``) and gunicorn's shared stops
(``adapters/gunicorn.py``) this adapter:

- counts ``max_requests`` itself (uvicorn's own count is turned off): at the limit the
  worker stops accepting, serves what it accepted, and stops like any recycle;
- also answers and closes hung requests when uvicorn stopped by itself (recycling) or was
  let go at once (a reload): uvicorn waits for them in both cases;
- closes uvicorn's listening servers (``Server.servers``) itself when other workers serve
  on (a reload, TTOU), before it lets uvicorn stop;
- ends a quick stop by setting uvicorn's ``should_exit`` (the process exits 0);
- ends the process with status 0 when tasks that ignore cancellation would hang the
  event loop's teardown.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .._core.process import exit_now
from ._compat import fall_back, installed_version, shown
from .gunicorn import RECYCLE, GunicornStops, find_worker, gunicorn_problem, gunicorn_version
from .uvicorn import Adapter as UvicornAdapter
from .uvicorn import running as uvicorn_running

if TYPE_CHECKING:
    from .._core.lifecycle import Lifecycle

logger = logging.getLogger("django_graceful")

#: gunicorn's Worker as uvicorn-worker 0.4 uses it (older gunicorn works the same way).
MIN_VERSION = (27,)


def running(modules: dict[str, ModuleType]) -> bool:
    """Is uvicorn serving inside a gunicorn worker in this process?"""
    return uvicorn_running(modules) and find_worker(modules) is not None


class Adapter(GunicornStops, UvicornAdapter):
    name = "gunicorn-uvicorn"
    #: max_requests (with uvicorn's jitter), counted by us (None: no limit)
    _request_limit: int | None = None

    def engage(self, lifecycle: Lifecycle) -> None:
        worker = find_worker(sys.modules)
        problem = gunicorn_problem(worker, gunicorn_version(), MIN_VERSION)
        super().engage(lifecycle)  # the Uvicorn adapter (it warns itself if it cannot)
        if self.server is None:
            return
        if problem is not None:
            fall_back(
                f"gunicorn (uvicorn worker {shown(installed_version('uvicorn-worker'))})",
                problem,
                "the Uvicorn adapter alone: gunicorn's graceful_timeout, recycling and "
                "SIGQUIT are not looked after",
            )
            return
        self._take_over_the_request_limit()
        self.engage_gunicorn(lifecycle, worker)

    def _take_over_the_request_limit(self) -> None:
        """Count ``max_requests`` here instead of in uvicorn: uvicorn, reaching it, closes
        every connection at once, also those just accepted whose request is still unread
        (the client gets a reset); we stop accepting first (``_hand_over``)."""
        self._request_limit = getattr(self.server, "limit_max_requests", None)
        limit_is_cached = isinstance(
            type(self.server).__dict__.get("limit_max_requests"), functools.cached_property
        )
        if isinstance(self._request_limit, int) and limit_is_cached:
            self.server.__dict__["limit_max_requests"] = None  # its own check never fires

    # -- what uvicorn does by itself --------------------------------------------------

    def _stopping_by_itself(self) -> bool:
        return super()._stopping_by_itself() or self._uvicorn_recycles() or self.server.should_exit

    def _uvicorn_recycles(self) -> bool:
        limit = self._request_limit
        return isinstance(limit, int) and self.server.server_state.total_requests >= limit

    def _why_stopping(self) -> str:
        if self._uvicorn_recycles():
            return f"max_requests {self._request_limit} reached"
        if self.server.should_exit:
            return "uvicorn took a signal itself"
        return super()._why_stopping()

    def _server_still_waits(self) -> bool:
        # Also after recycling or a release at once: uvicorn waits for the requests.
        return self.lifecycle is not None and (
            self.lifecycle.trigger in (RECYCLE,) or self._first_signal is not None
        )

    # -- the stop itself --------------------------------------------------------------

    def _stop_accepting(self) -> None:
        for server in getattr(self.server, "servers", []):
            server.close()

    def _quick_release(self) -> None:
        self.server.should_exit = True

    def _stop_now(self) -> None:
        # After a signal uvicorn's handler has set it already; after a recycle we have.
        self.server.should_exit = True

    def _guards_teardown(self) -> bool:
        return True

    def _end_process(self, pending: set[asyncio.Task[Any]]) -> None:
        logger.error(
            "%d task(s) ignore cancellation and would keep the event loop from closing: %s; "
            "exiting now",
            len(pending),
            "; ".join(sorted({self._describe(t) for t in pending})),
        )
        exit_now(0)
