"""A LIFESPAN manager: what a connection pool or a producer would look like."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

logger = logging.getLogger("example_project")


@asynccontextmanager
async def resources(app: Any) -> AsyncIterator[dict[str, Any]]:
    pool = {"name": "example-pool", "open": True}
    logger.info("lifespan: pool opened")
    try:
        yield {"pool": pool}
    finally:
        pool["open"] = False
        logger.info("lifespan: pool closed")
