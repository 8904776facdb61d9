"""The test project, except that the first process to load it fails its startup, late."""

import os
import time

try:
    os.close(os.open(os.environ["GRACEFUL_TEST_FAIL_ONCE"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
except FileExistsError:
    pass
else:
    os.environ["GRACEFUL_TEST_FAIL_STARTUP"] = "1"
    time.sleep(2)  # the other workers are serving by the time this one fails

from .asgi import application

__all__ = ["application"]
