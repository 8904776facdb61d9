"""Why work was cancelled, and the token that tells sync and async code it should stop."""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable

logger = logging.getLogger("django_graceful")


class CancelReason(enum.StrEnum):
    DISCONNECT = "disconnect"  # the client went away
    SHUTDOWN = "shutdown"  # the server is stopping and the grace period is over
    TIMEOUT = "timeout"  # the view's own timeout passed


class RequestCancelled(Exception):
    """Raised by ``token.raise_if_cancelled()`` in code that was told to stop."""

    def __init__(self, reason: CancelReason) -> None:
        super().__init__(f"request cancelled: {reason}")
        self.reason = reason


#: One lock for every token: setting a token is rare and quick, and a lock per token
#: would double the memory each tracked request costs.
_LOCK = threading.Lock()


class CancellationToken:
    """Set once, with a reason; readable and waitable from any thread.

    Sync code (a sync view in asgiref's thread, a loop over rows) polls
    ``cancelled`` or calls ``raise_if_cancelled()``; callbacks (e.g. interrupting a
    running SQL query) run when it is set. The event a waiting thread blocks on and
    the callback list are made only when someone waits or registers: most tokens are
    never waited on, and a tracked request should cost well under 1 KB.
    """

    __slots__ = ("_callbacks", "_event", "reason")

    def __init__(self) -> None:
        self._event: threading.Event | None = None
        self._callbacks: list[Callable[[CancelReason], None]] | None = None
        self.reason: CancelReason | None = None

    @property
    def cancelled(self) -> bool:
        return self.reason is not None

    def cancel(self, reason: CancelReason) -> bool:
        """Set the token; False if it was already set (the first reason stays)."""
        with _LOCK:
            if self.reason is not None:
                return False
            self.reason = reason
            callbacks, self._callbacks = self._callbacks or [], None
            event = self._event
        if event is not None:
            event.set()
        for callback in callbacks:
            try:
                callback(reason)
            except Exception:
                logger.exception("cancellation callback %r failed", callback)
        return True

    def raise_if_cancelled(self) -> None:
        if self.reason is not None:
            raise RequestCancelled(self.reason)

    def wait(self, timeout: float | None = None) -> bool:
        """Block the calling thread until cancelled or ``timeout``; True if cancelled."""
        with _LOCK:
            if self.reason is not None:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)

    def on_cancel(self, callback: Callable[[CancelReason], None]) -> Callable[[], None]:
        """Call ``callback(reason)`` when cancelled (at once if already); returns a remover."""
        with _LOCK:
            if self.reason is None:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return lambda: self._remove(callback)
            reason = self.reason
        callback(reason)
        return lambda: None

    def _remove(self, callback: Callable[[CancelReason], None]) -> None:
        with _LOCK:
            if self._callbacks and callback in self._callbacks:
                self._callbacks.remove(callback)

    def __repr__(self) -> str:
        return f"<CancellationToken {self.reason or 'active'}>"


class _NeverCancelled(CancellationToken):
    __slots__ = ()

    def cancel(self, reason: CancelReason) -> bool:
        return False

    def on_cancel(self, callback: Callable[[CancelReason], None]) -> Callable[[], None]:
        return lambda: None


#: A token that is never cancelled: what code outside any tracked work sees.
NEVER: CancellationToken = _NeverCancelled()
