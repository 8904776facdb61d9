"""The test project's ASGI app, imported slowly (a signal can arrive while a worker imports it)."""

import os
import time

from .events import record

record("import-begin")
time.sleep(float(os.environ.get("GRACEFUL_TEST_IMPORT_DELAY", "2")))

from .asgi import application  # noqa: E402

__all__ = ["application"]
