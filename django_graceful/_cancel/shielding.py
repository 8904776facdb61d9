"""``shield(timeout=)``: let a critical section finish despite a cancel, for a bounded time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .._core.registry import Tracked, current_item

logger = logging.getLogger("django_graceful")


@asynccontextmanager
async def shield(timeout: float) -> AsyncIterator[None]:
    """Hold back cancellation of the current request (or spawned task) while the block runs.

    A client disconnect or a shutdown cancel that arrives meanwhile is held and
    delivered when the block exits, or when ``timeout`` seconds have passed
    (then the block itself is cancelled: a shield never outlives its bound).
    The token (``request.cancellation``) still shows the reason at once.

    It guards against what django_graceful and Django do on a disconnect or a
    shutdown; a server that cancels the task itself after its own timeout is not
    held (django_graceful's adapters keep that from happening within the budget).
    """
    if isinstance(timeout, bool) or not timeout >= 0:
        raise ValueError(f"shield timeout must be seconds >= 0, not {timeout!r}")
    item = current_item()
    if item is None:
        yield  # no tracked work here: nothing of ours can cancel this block
        return
    item.begin_shield()
    expiry = asyncio.get_running_loop().call_later(timeout, _expire, item, timeout)
    try:
        yield
    finally:
        expiry.cancel()
        item.end_shield()


def _expire(item: Tracked, timeout: float) -> None:
    if item.shielded:
        if item.reason is not None:
            logger.warning("shield in %s ran past its %g s: cancelling it", item.what, timeout)
        item.end_shield(expired=True)
