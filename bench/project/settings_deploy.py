"""django_graceful as in settings.py, its budget read from the environment (bench/deploy.py).

``BENCH_GRACE`` (default 3) is the GRACE_PERIOD and ``BENCH_DRAIN`` (default 0) the
DRAIN_DELAY, in seconds; CANCEL_TIMEOUT stays 1 s.
"""

import os

from .settings import *  # noqa: F403

GRACEFUL = {
    "DRAIN_DELAY": float(os.environ.get("BENCH_DRAIN", "0")),
    "GRACE_PERIOD": float(os.environ.get("BENCH_GRACE", "3")),
    "CANCEL_TIMEOUT": 1,
}
