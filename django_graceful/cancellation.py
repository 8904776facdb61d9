"""Why work was cancelled: the reasons a view, task or thread can be told to stop."""

from __future__ import annotations

import enum


class CancelReason(enum.StrEnum):
    DISCONNECT = "disconnect"  # the client went away
    SHUTDOWN = "shutdown"  # the server is stopping and the grace period is over
    TIMEOUT = "timeout"  # the view's own timeout passed


class RequestCancelled(Exception):
    """Raised by ``token.raise_if_cancelled()`` in code that was told to stop."""

    def __init__(self, reason: CancelReason) -> None:
        super().__init__(f"request cancelled: {reason}")
        self.reason = reason
