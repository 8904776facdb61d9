"""The phases of one process's life, from startup to the end of its bounded shutdown.

::

    NEW -> STARTING -> SERVING
    SERVING --SIGTERM/SIGINT, lifespan.shutdown, or a server's own stop--> DRAINING
    DRAINING   (DRAIN_DELAY s)    keep serving; readiness answers 503
    CLOSING    (GRACE_PERIOD s)   new requests get 503 + Connection: close; in-flight
                                  requests, websockets and spawned tasks may finish;
                                  websockets are closed (1012), endless streams
                                  (server-sent events) ended, threads told to stop
    CANCELLING (CANCEL_TIMEOUT s) what is left is cancelled with reason SHUTDOWN (again
                                  if it swallows the cancel); running SQL is interrupted
    REPORTING                     what still runs is hung: logged with its stack and
                                  written as the last report; shutdown hooks and the
                                  LIFESPAN exits run, each bounded
    STOPPED                       the server's own stop proceeds

A second signal skips to CANCELLING, a third to REPORTING. From the first signal to
STOPPED takes at most the budget (``Lifecycle.budget()``: drain + grace + cancel + the
hooks' own bounds); past ``budget + EXIT_SLACK`` a watchdog ends the process.
"""

from __future__ import annotations

import enum

#: What the shutdown may overrun its budget by before the watchdog ends the process.
EXIT_SLACK = 1.0

#: The least CANCEL_TIMEOUT a shortened shutdown leaves (a budget fitted to a server's
#: limit, a quick stop's window): cancelled work gets a moment to unwind.
MIN_CANCEL = 0.5


class Phase(enum.IntEnum):
    NEW = 0
    STARTING = 1
    SERVING = 2
    DRAINING = 3  # keep serving; readiness answers 503
    CLOSING = 4  # new requests get 503 + Connection: close; in-flight work may finish
    CANCELLING = 5  # what is left is cancelled with reason SHUTDOWN
    REPORTING = 6  # what still runs is hung: logged; shutdown hooks run
    STOPPED = 7
