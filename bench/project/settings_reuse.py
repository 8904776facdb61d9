"""The bench settings with REUSE_SYNC_THREADS: requests' sync code on reused threads."""

from .settings import *  # noqa: F403
from .settings import GRACEFUL

GRACEFUL = {**GRACEFUL, "REUSE_SYNC_THREADS": True}
