"""LIFESPAN managers of the test project."""

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .events import record


@asynccontextmanager
async def resources(app: Any) -> AsyncIterator[dict[str, Any]]:
    if os.environ.get("GRACEFUL_TEST_FAIL_LIFESPAN"):
        raise RuntimeError("database unreachable (test)")
    record("lifespan-enter")
    try:
        yield {"pool": "pool-of-" + str(os.getpid())}
    finally:
        record("lifespan-exit")


@asynccontextmanager
async def broken(app: Any) -> AsyncIterator[dict[str, Any]]:
    raise RuntimeError("database unreachable (test)")
    yield {}


@asynccontextmanager
async def not_a_dict(app: Any) -> AsyncIterator[Any]:
    yield ["pool"]


@asynccontextmanager
async def blocks_on_exit(app: Any) -> AsyncIterator[None]:
    """Its exit blocks the event loop (``time.sleep`` in async code) for an hour."""
    yield
    record("blocking-lifespan-exit")
    time.sleep(3600)  # noqa: ASYNC251  # blocks the loop
