"""``@cancellable``: a view that times out, cleans up once, and says why it was cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, ParamSpec, TypeVar, overload

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse

from .. import signals
from .._core.cancellation import NEVER, CancellationToken, CancelReason, RequestCancelled
from .._core.deadlines import bounded_call
from .._core.hooks import log_failure
from .._core.registry import current_item, request_label
from ..conf import get_settings

logger = logging.getLogger("django_graceful")

View = Callable[..., Any]
#: ``on_cancel(request, reason)``: sync, or async (then the view must be async too).
OnCancel = Callable[[HttpRequest, CancelReason], object]
TimeoutResponse = Callable[[HttpRequest], HttpResponse]

P = ParamSpec("P")
R = TypeVar("R")


def default_timeout_response(request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        "Gateway Timeout: the view took too long.\n",
        status=504,
        content_type="text/plain; charset=utf-8",
    )


# The decorated view keeps its type (an async view its coroutine, a sync view its
# return type); a timeout answers with ``timeout_response``'s HttpResponse instead.
@overload
def cancellable(
    view: Callable[P, R],
    *,
    timeout: float | None = None,
    on_cancel: OnCancel | None = None,
    timeout_response: TimeoutResponse = default_timeout_response,
) -> Callable[P, R]: ...
@overload
def cancellable(
    view: None = None,
    *,
    timeout: float | None = None,
    on_cancel: OnCancel | None = None,
    timeout_response: TimeoutResponse = default_timeout_response,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def cancellable(
    view: View | None = None,
    *,
    timeout: float | None = None,
    on_cancel: OnCancel | None = None,
    timeout_response: TimeoutResponse = default_timeout_response,
) -> Any:
    """Make a view (async or sync) stop cleanly when cancelled.

    - ``timeout``: after so many seconds the view is cancelled with reason TIMEOUT
      and the client gets ``timeout_response(request)`` (504 by default);
    - ``on_cancel(request, reason)``: sync or async, run once when the view is
      cancelled, shielded from further cancels and bounded by ``HOOK_TIMEOUT``;
    - the cancellation is always re-raised (only our own timeout is turned into a
      response); one log line names the view, the reason and the time it ran; the
      ``request_cancelled`` signal is sent.

    A sync view cannot be interrupted: it learns of the cancel through its token
    (``request.cancellation.raise_if_cancelled()`` in its loop).
    """
    if timeout is not None and (isinstance(timeout, bool) or not timeout > 0):
        raise ValueError(f"cancellable timeout must be seconds > 0, not {timeout!r}")
    if on_cancel is not None and not callable(on_cancel):
        raise TypeError(f"on_cancel must be callable, not {on_cancel!r}")

    def decorate(view: View) -> View:
        options = _Options(view, timeout, on_cancel, timeout_response)
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_view(*args: Any, **kwargs: Any) -> Any:
                return await _run_async(options, _request_of(args), view(*args, **kwargs))

            return async_view

        @functools.wraps(view)
        def sync_view(*args: Any, **kwargs: Any) -> Any:
            return _run_sync(options, *args, **kwargs)

        return sync_view

    return decorate(view) if view is not None else decorate


class _Options:
    __slots__ = ("name", "on_cancel", "timeout", "timeout_response", "view")

    def __init__(
        self,
        view: View,
        timeout: float | None,
        on_cancel: OnCancel | None,
        response: TimeoutResponse,
    ) -> None:
        self.view = view
        self.name = _view_name(view)
        self.timeout = timeout
        self.on_cancel = on_cancel
        self.timeout_response = response


def _view_name(view: View) -> str:
    """``module.qualname`` of the view; for a class-based view, of its class.

    ``method_decorator`` hands us ``partial(bound dispatch)`` named after the method
    it wraps, which for an inherited ``dispatch`` is Django's ``View.dispatch``.
    """
    owner = getattr(getattr(view, "func", None), "__self__", None)
    if owner is not None:
        cls = type(owner)
        return f"{cls.__module__}.{cls.__qualname__}"
    return f"{view.__module__}.{view.__qualname__}"


def _request_of(args: tuple[Any, ...]) -> HttpRequest:
    # A function view gets (request, ...); a method (via method_decorator) too.
    for arg in args[:2]:
        if isinstance(arg, HttpRequest):
            return arg
    raise TypeError("@cancellable decorates views: the first argument must be the request")


def _token_for(request: HttpRequest) -> CancellationToken:
    token = getattr(request, "cancellation", None)
    if token is None or token is NEVER:
        # No GracefulMiddleware: a token of our own still carries TIMEOUT.
        token = CancellationToken()
        request.cancellation = token  # type: ignore[attr-defined]
    return token


async def _run_async(options: _Options, request: HttpRequest, work: Awaitable[Any]) -> Any:
    token = _token_for(request)
    task = asyncio.current_task()
    started = time.monotonic()
    timed_out = False

    def expire() -> None:
        nonlocal timed_out
        first = token.cancel(CancelReason.TIMEOUT)  # False if already cancelled otherwise
        item = current_item()
        if item is not None:
            item.tell(CancelReason.TIMEOUT)
        if first and task is not None:
            timed_out = True
            task.cancel("django_graceful: timeout")

    timer = (
        asyncio.get_running_loop().call_later(options.timeout, expire)
        if options.timeout is not None
        else None
    )
    try:
        return await work
    except asyncio.CancelledError:
        reason = token.reason or CancelReason.DISCONNECT
        await _after_cancel_async(options, request, reason, time.monotonic() - started)
        if timed_out and task is not None and task.uncancel() == 0:
            return options.timeout_response(request)
        raise
    finally:
        if timer is not None:
            timer.cancel()


def _run_sync(options: _Options, *args: Any, **kwargs: Any) -> Any:
    request = _request_of(args)
    token = _token_for(request)
    started = time.monotonic()
    timer = None
    if options.timeout is not None:
        timer = threading.Timer(options.timeout, token.cancel, (CancelReason.TIMEOUT,))
        timer.daemon = True
        timer.start()
    try:
        result = options.view(*args, **kwargs)
    except RequestCancelled as exc:
        _after_cancel_sync(options, request, exc.reason, time.monotonic() - started)
        if exc.reason is CancelReason.TIMEOUT:
            return options.timeout_response(request)
        raise
    finally:
        if timer is not None:
            timer.cancel()
    if inspect.isawaitable(result):
        # A sync callable that returns a coroutine: an async class-based view's
        # dispatch(). Guard the coroutine as an async view.
        return _run_async(options, request, result)
    return result


async def _after_cancel_async(
    options: _Options, request: HttpRequest, reason: CancelReason, elapsed: float
) -> None:
    """Log, run ``on_cancel`` once (shielded, bounded), and send ``request_cancelled``."""
    _log(options, request, reason, elapsed)
    if options.on_cancel is not None:
        cleanup = asyncio.ensure_future(_call_on_cancel(options, request, reason))
        await _wait_through_cancels(cleanup)
    await signals.request_cancelled.asend_robust(
        sender=cancellable, request=request, reason=reason, elapsed=elapsed
    )


def _after_cancel_sync(
    options: _Options, request: HttpRequest, reason: CancelReason, elapsed: float
) -> None:
    _log(options, request, reason, elapsed)
    on_cancel = options.on_cancel
    if on_cancel is not None:
        timeout = get_settings().HOOK_TIMEOUT
        done = threading.Event()

        def run() -> None:
            try:
                result = on_cancel(request, reason)
                if inspect.isawaitable(result):
                    raise TypeError("an async on_cancel needs an async view")
            except Exception:
                logger.exception("on_cancel of %s raised", options.name)
            finally:
                done.set()

        threading.Thread(target=run, name=f"graceful-on-cancel:{options.name}", daemon=True).start()
        if not done.wait(timeout):
            logger.error("on_cancel of %s did not finish within %g s", options.name, timeout)
    signals.request_cancelled.send_robust(
        sender=cancellable, request=request, reason=reason, elapsed=elapsed
    )


async def _call_on_cancel(options: _Options, request: HttpRequest, reason: CancelReason) -> None:
    timeout = get_settings().HOOK_TIMEOUT
    on_cancel = options.on_cancel
    assert on_cancel is not None
    outcome = await bounded_call(partial(on_cancel, request, reason), timeout, "on_cancel")
    log_failure(outcome, f"on_cancel of {options.name}", timeout, "moving on")


async def _wait_through_cancels(task: asyncio.Future[Any]) -> None:
    """Await ``task`` to its end even if this task is cancelled again meanwhile.

    ``task`` is bounded itself; the caller re-raises its cancellation afterwards,
    so the cancels that arrive meanwhile are not lost.
    """
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task})


def _log(options: _Options, request: HttpRequest, reason: CancelReason, elapsed: float) -> None:
    item = current_item()
    what = (
        item.what
        if item is not None
        else request_label(request.method, request.path, redact=get_settings().REDACT_PATHS)
    )
    logger.info("view %s (%s) cancelled: %s after %.3f s", options.name, what, reason, elapsed)
