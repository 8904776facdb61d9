"""The Django signals django_graceful sends; receivers may be sync or async.

Receivers of ``startup``, ``shutdown_started`` and ``shutdown`` are run one by one,
each bounded by its own timeout (``@on_startup(timeout=…)``) or ``HOOK_TIMEOUT``.

- ``startup(sender, state)``: the app is starting; ``state`` is the merged LIFESPAN state.
- ``shutdown_started(sender, trigger)``: draining began (``trigger``: ``"SIGTERM"``,
  ``"SIGINT"``, ``"lifespan"`` …). Readiness now answers 503.
- ``shutdown(sender, hung)``: in-flight work is over (or hung); release resources.
  ``hung`` lists what still ran when the budget ended.
- ``request_cancelled(sender, request, reason, elapsed)``: a view was cancelled.
- ``hang_detected(sender, item, kind)``: something refuses to stop.
"""

from django.dispatch import Signal

startup = Signal()
shutdown_started = Signal()
shutdown = Signal()
request_cancelled = Signal()
hang_detected = Signal()
