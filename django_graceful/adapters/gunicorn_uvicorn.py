"""Gunicorn with the Uvicorn worker (``-k uvicorn_worker.UvicornWorker``): the Uvicorn
adapter, inside gunicorn's ways of stopping a worker.

uvicorn-worker (``uvicorn_worker/_workers.py``) runs
``uvicorn.server.Server.serve`` in each gunicorn worker: uvicorn installs its SIGTERM/SIGINT
handlers, counts ``max_requests`` itself (``Server.on_tick`` ends the main loop once
``server_state.total_requests`` reaches ``limit_max_requests``, with no signal), sends the
heartbeat from that main loop (``callback_notify``), passes no
``timeout_graceful_shutdown`` (so uvicorn waits for requests forever), and handles SIGQUIT
with the Worker's ``handle_exit`` (it only sets ``alive = False``: uvicorn never reads it).
Reaching ``max_requests`` uvicorn closes every connection at once, also those whose
request it has not read yet: their clients get a reset.

On top of the Uvicorn driver (``adapters/uvicorn.py``) and gunicorn's shared stops
(``adapters/gunicorn.py``) this driver:

- counts ``max_requests`` itself (uvicorn's own count is turned off): at the limit the
  worker stops accepting, serves what it accepted, and stops like any recycle;
- closes uvicorn's listening servers (``Server.servers``) itself when other workers serve
  on (a reload, TTOU), before it lets uvicorn stop;
- ends a quick stop by setting uvicorn's ``should_exit`` (the process exits 0);
- has the process end with status 0, as gunicorn's own worker does, when tasks that
  ignore cancellation would hang the event loop's teardown.

What it reads of uvicorn-worker: nothing beyond uvicorn's ``Server`` (``uvicorn.Uvicorn``,
the probe) and gunicorn's ``Worker`` (``gunicorn.Gunicorn``); checked against 0.4.0.
"""

from __future__ import annotations

import sys
from types import ModuleType

from .._core.driver import Control, Ending
from ._versions import fall_back, installed_version, shown
from .gunicorn import Gunicorn, GunicornStops, gunicorn_version
from .uvicorn import UvicornDriver
from .uvicorn import running as uvicorn_running

#: gunicorn's Worker as uvicorn-worker 0.4 uses it (older gunicorn works the same way).
MIN_VERSION = (27,)


def running(modules: dict[str, ModuleType]) -> bool:
    """Is uvicorn serving inside a gunicorn worker in this process?"""
    return uvicorn_running(modules) and Gunicorn.find(modules) is not None


class GunicornUvicornDriver(GunicornStops, UvicornDriver):
    name = "gunicorn-uvicorn"
    #: max_requests (with uvicorn's jitter), counted by us (None: no limit)
    _request_limit: int | None = None

    def attach(self, control: Control, *, handle_signals: bool) -> None:
        worker = Gunicorn.find(sys.modules)
        problem = Gunicorn.problem(worker, gunicorn_version(), MIN_VERSION)
        super().attach(control, handle_signals=handle_signals)  # the Uvicorn driver's
        if self.uvicorn is None:
            return
        if problem is not None:
            fall_back(
                f"gunicorn (uvicorn worker {shown(installed_version('uvicorn-worker'))})",
                problem,
                "the Uvicorn driver alone: gunicorn's graceful_timeout, recycling and "
                "SIGQUIT are not looked after",
            )
            return
        # Counted here instead of in uvicorn: uvicorn, reaching it, closes every
        # connection at once, also those just accepted whose request is still unread
        # (the client gets a reset); we stop accepting first (an ``alone`` stop).
        self._request_limit = self.uvicorn.take_request_limit()
        self.attach_gunicorn(control, Gunicorn(worker))

    def _stopping_by_itself(self) -> str | None:
        assert self.uvicorn is not None
        limit = self._request_limit
        if limit is not None and self.uvicorn.total_requests >= limit:
            return f"max_requests {limit} reached"
        if self.uvicorn.should_exit:
            return "uvicorn took a signal itself"
        return super()._stopping_by_itself()

    def forced_ending(self, signum: int | None) -> Ending | None:
        return Ending(0)

    def _close_listeners(self) -> None:
        assert self.uvicorn is not None
        self.uvicorn.close_listeners()

    def _quick_release(self) -> None:
        assert self.uvicorn is not None
        self.uvicorn.exit()

    def _stop_now(self) -> None:
        # After a signal uvicorn's handler has set it already; after a recycle we do.
        assert self.uvicorn is not None
        self.uvicorn.exit()
