"""django_graceful with its state in the folder bench/snapshots.py names (BENCH_STATE_DIR)."""

import os

from .settings import *  # noqa: F403
from .settings import GRACEFUL

GRACEFUL = {**GRACEFUL, "STATE_DIR": os.environ.get("BENCH_STATE_DIR", "/tmp/graceful-bench")}
