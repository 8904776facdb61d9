"""``checkshutdown --drill``: a deploy's SIGTERM, rehearsed on a real server, and what hung.

The drill starts the project as ``manage.py serve`` would (same command line, on
127.0.0.1 and a free port, in a process group of its own), waits until it answers,
sends ``--concurrency`` GET requests to each ``--url``, waits until the server's live
snapshots show them in flight, sends SIGTERM to the server process (as a container
runtime does), and times the exit against the shutdown budget. Then it reads the last
shutdown reports the server's workers wrote, and says what did not stop.

Which reports are the drill's: the server is started with ``GRACEFUL_HOST_ID`` set to
a fresh ``drill-<hex>`` id. Every process it forks (Granian's worker, Uvicorn's
``--workers``) inherits it and writes it into each snapshot and last report, so the
drill reads exactly its own server's documents, however many workers there were,
whatever their pids, and never another process's report, old or new, from the same
``STATE_DIR`` or cache. When it is done it removes those documents, and nothing else.

Verdict: something hung (exit status 1) when a last report lists work that did not
stop, a worker ended without a report, the server outlived the budget (plus the
watchdog's slack) or was ended by the watchdog, or processes of the server outlived
it. Nothing hung (0) when the requests finished or were cancelled cleanly within the
budget. 2: the drill could not be run (bad input, no server, it would not start, no
state to read).

The parts, one idea each: ``model`` (what the drill saw, its JSON), ``rehearsal`` (the
steps), ``client`` (HTTP), ``live`` (the server's live snapshots while it serves),
``processes`` (its process group), ``output`` (what it printed), ``verdict`` and
``render``.
"""

from __future__ import annotations

from .model import Answer, Drill, DrillError, summary
from .processes import group_members
from .rehearsal import main, run

__all__ = ["Answer", "Drill", "DrillError", "group_members", "main", "run", "summary"]
