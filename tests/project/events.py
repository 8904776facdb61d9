"""Append-only JSON-lines file of what happened in the server process, for tests to read."""

import json
import os
import time
from typing import Any


def record(event: str, **fields: Any) -> None:
    path = os.environ.get("GRACEFUL_TEST_EVENTS")
    if not path:
        return
    line = json.dumps({"event": event, "pid": os.getpid(), "t": time.time(), **fields})
    with open(path, "a") as f:
        f.write(line + "\n")
