"""Placeholder: filled in by the staticscan work (see checkshutdown --static)."""

from __future__ import annotations

from typing import Any


def main(options: dict[str, Any], stdout: Any, stderr: Any) -> int:
    stderr.write("not implemented yet")
    return 2
