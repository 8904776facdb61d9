"""Startup/shutdown hooks: decorators over our signals, and running receivers each bounded."""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar, overload

from django.dispatch import Signal

from .. import signals
from .deadlines import UNWIND, Outcome, bounded_call

logger = logging.getLogger("django_graceful")

# A hook takes no arguments; sync or async, the decorator hands it back unchanged.
H = TypeVar("H", bound=Callable[[], object])


def hook_name(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of a hook, for logs."""
    fn = getattr(fn, "graceful_hook", fn)
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', repr(fn))}"


class HookDecorator(Protocol):
    """``@on_startup`` / ``@on_shutdown``: bare, or called with ``timeout=`` seconds."""

    @overload
    def __call__(self, fn: H, *, timeout: float | None = None) -> H: ...
    @overload
    def __call__(self, fn: None = None, *, timeout: float | None = None) -> Callable[[H], H]: ...


def _decorator(signal: Signal, kind: str) -> HookDecorator:
    def register(fn: Callable[[], object] | None = None, *, timeout: float | None = None) -> Any:
        if timeout is not None and (isinstance(timeout, bool) or not timeout >= 0):
            raise ValueError(f"{kind} timeout must be seconds >= 0, not {timeout!r}")

        def connect(fn: H) -> H:
            if not callable(fn):
                raise TypeError(f"@{kind} decorates a function, not {fn!r}")
            if inspect.iscoroutinefunction(fn):

                async def receiver(sender: Any, **kwargs: Any) -> Any:
                    return await fn()

            else:

                def receiver(sender: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
                    return fn()

            receiver.graceful_hook = fn  # type: ignore[attr-defined]
            receiver.graceful_timeout = timeout  # type: ignore[attr-defined]
            signal.connect(receiver, weak=False, dispatch_uid=f"graceful:{kind}:{hook_name(fn)}")
            return fn

        return connect(fn) if fn is not None else connect

    return register


on_startup = _decorator(signals.startup, "on_startup")
on_shutdown = _decorator(signals.shutdown, "on_shutdown")


@dataclass(frozen=True, slots=True)
class RunningHook:
    """A hook (or a LIFESPAN manager's entry or exit) running now, as logs name it
    (``hook <module.qualname>``); since when (``time.monotonic()``), and its bound."""

    what: str
    since: float
    timeout: float

    def overran(self, now: float) -> bool:
        """Whether it still runs past its bound and the moment a cancelled hook gets to
        unwind: then it holds the event loop (else it would have been abandoned)."""
        return now - self.since > self.timeout + UNWIND

    def describe(self, now: float) -> str:
        """``hook <name> has blocked the event loop for 5.2 s (its bound: 0.5 s)``, or
        ``has run`` while within its bound."""
        did = "has blocked the event loop" if self.overran(now) else "has run"
        took = now - self.since
        return f"{self.what} {did} for {took:.1f} s (its bound: {self.timeout:g} s)"


#: The hooks running now, for the watchdog (another thread): an async hook that blocks
#: the event loop never returns, and is named by what the watchdog finds here. The lock:
#: it is read from the watchdog's thread.
_running: dict[int, RunningHook] = {}
_running_lock = threading.Lock()


@contextlib.contextmanager
def running(what: str, timeout: float) -> Iterator[None]:
    """List ``what`` (bounded by ``timeout``) in :func:`running_hooks` while it runs."""
    hook = RunningHook(what, time.monotonic(), timeout)
    with _running_lock:
        _running[id(hook)] = hook
    try:
        yield
    finally:
        with _running_lock:
            del _running[id(hook)]


def running_hooks() -> list[RunningHook]:
    """The hooks running now (from any thread), oldest first."""
    with _running_lock:
        return sorted(_running.values(), key=lambda hook: hook.since)


@dataclass(frozen=True, slots=True)
class HookResult:
    name: str
    timeout: float
    outcome: Outcome


def receivers(signal: Signal, sender: Any) -> list[Callable[..., Any]]:
    """The live receivers of ``signal`` for ``sender``, sync and async, in connection order."""
    if not signal.receivers:
        return []
    sync, asynchronous = signal._live_receivers(sender)
    live = {id(r): r for r in (*sync, *asynchronous)}
    ordered = []
    for entry in signal.receivers:  # entry[1] is the receiver, or a weak reference to it
        target = entry[1]() if isinstance(entry[1], weakref.ReferenceType) else entry[1]
        if id(target) in live:
            ordered.append(live.pop(id(target)))
    return [*ordered, *live.values()]


def budget(signal: Signal, sender: Any, default_timeout: float) -> float:
    """The most that sending ``signal`` through :func:`send_bounded` can take."""
    return sum(_timeout_of(r, default_timeout) for r in receivers(signal, sender))


def _timeout_of(receiver: Callable[..., Any], default_timeout: float) -> float:
    timeout = getattr(receiver, "graceful_timeout", None)
    return default_timeout if timeout is None else float(timeout)


async def send_bounded(
    signal: Signal, sender: Any, default_timeout: float, *, log: bool = True, **kwargs: Any
) -> list[HookResult]:
    """Call each receiver in turn, each within its timeout; log what raised or hung
    (unless ``log`` is False: the caller reports the results itself)."""
    results = []
    for receiver in receivers(signal, sender):
        timeout = _timeout_of(receiver, default_timeout)
        name = hook_name(receiver)
        call = partial(receiver, signal=signal, sender=sender, **kwargs)
        with running(f"hook {name}", timeout):
            outcome = await bounded_call(call, timeout, name)
        if log:
            log_failure(outcome, f"hook {name}", timeout, "moving on")
        results.append(HookResult(name, timeout, outcome))
    return results


def log_failure(outcome: Outcome, what: str, timeout: float, then: str) -> None:
    """Log a bounded call that hung (``what did not finish within …; then``) or raised."""
    if not outcome.finished:
        logger.error("%s did not finish within %.3g s; %s", what, timeout, then)
    elif outcome.error is not None:
        logger.error(
            "%s raised %s: %s",
            what,
            type(outcome.error).__name__,
            outcome.error,
            exc_info=outcome.error,
        )
