"""The project on a real ASGI server for a test session, its shutdown checked at the end.

pytest-django's ``live_server`` runs WSGI in a thread of the test process; this is its
ASGI counterpart, started as ``checkshutdown --drill`` starts its server (same command
line, 127.0.0.1 on a free port, a process group of its own, a fresh host id) and
stopped as a deploy stops it: SIGTERM, the exit timed against the shutdown budget, and
the last reports of its workers read for work that did not stop. The drill's machinery
does each step; only the load (the test session's requests) differs.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .._cli.servers import KINDS, SERVERS
from .._diagnosis.drill import client, live, processes, rehearsal
from .._diagnosis.drill.model import DEFAULT_SERVER, Drill, DrillError
from .._diagnosis.status import CANNOT_CHECK, OK
from .drill import DrillOutcome


def drill_options(server: str, worker_class: str | None = None) -> dict[str, Any]:
    """The drill's ``--server``/``--worker-class``/``--interface`` for ``server``, a server
    or a kind of ``_cli/servers.py`` (``granian-rsgi``: Granian's RSGI interface)."""
    kind = KINDS.get(server)
    if server in SERVERS or kind is None:  # an unknown name: the drill says so
        return {"server": server, "worker_class": worker_class}
    chosen = worker_class if worker_class is not None else kind.worker_class
    return {"server": kind.server, "worker_class": chosen, "interface": kind.interface}


class ShutdownNotClean(AssertionError):
    """The live server's shutdown left work running, ran past its budget, or could not be
    checked (the message says what, and where the work was)."""


class GracefulLiveServer:
    """A running server: ``url`` (``live + "/path/"`` too), ``port``; :meth:`stop` ends it."""

    def __init__(self, server: str = DEFAULT_SERVER, worker_class: str | None = None) -> None:
        """Start the project's ``ASGI_APPLICATION`` on ``server`` (as ``serve --server``
        names it, or a kind: ``granian-rsgi``, ``gunicorn-asgi``); returns once it answers
        HTTP. Raises ``DrillError`` (its message and the server's last lines) if it cannot."""
        self.drill = Drill()
        options = drill_options(server, worker_class)
        self._store, target, env = rehearsal.prepare(self.drill, options)
        self._folder = Path(tempfile.mkdtemp(prefix="graceful-live-"))
        self._log = self._folder / "server.log"
        self._outcome: DrillOutcome | None = None
        try:
            self._proc: subprocess.Popen[bytes] = rehearsal.start(
                self.drill, target, env, self._log
            )
        except BaseException:
            self._clean()
            raise

    @property
    def port(self) -> int:
        assert self.drill.port is not None
        return self.drill.port

    @property
    def url(self) -> str:
        return f"http://{client.HOST}:{self.port}"

    def __str__(self) -> str:
        return self.url

    def __add__(self, path: str) -> str:
        return self.url + path

    def stop(self) -> DrillOutcome:
        """SIGTERM the server, as a deploy would, and judge its shutdown (once: a second
        call returns the same verdict)."""
        if self._outcome is not None:
            return self._outcome
        try:
            seen = live.read(self._store, self.drill.host).pids
            rehearsal.stop(self.drill, self._proc, self._store, self._log, seen)
        except DrillError as exc:
            self.drill.status, self.drill.reason = CANNOT_CHECK, f"cannot check its stop: {exc}"
            self.drill.tail = exc.tail
        finally:
            processes.end(self._proc)
            self._clean()
        data = self.drill.as_dict()
        self._outcome = DrillOutcome(self.drill.status, self.drill.status != OK, "", data)
        return self._outcome

    def check_stop(self) -> None:
        """:meth:`stop`, and :class:`ShutdownNotClean` unless nothing hung."""
        __tracebackhide__ = True  # pytest shows the verdict, not this method
        outcome = self.stop()
        if not outcome.hung:
            return
        lines = [f"graceful_live_server ({self.drill.label}): {outcome.summary}"]
        lines += [f"server: {line}" for line in self.drill.tail or self.drill.log]
        lines += self.drill.notes
        raise ShutdownNotClean("\n".join(lines))

    def _clean(self) -> None:
        rehearsal.forget(self._store, self.drill.host)
        shutil.rmtree(self._folder, ignore_errors=True)
