"""The lines a hang report must point at, found by their ``# hang: …``/``# here: …`` comment."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def marked(path: str | Path, marker: str) -> str:
    """``file:line`` (relative to the repository, as a worker started there shows it) of the
    line that ends with ``marker``."""
    lines = Path(path).read_text().splitlines()
    number = next(n for n, line in enumerate(lines, 1) if line.rstrip().endswith(marker))
    return f"{os.path.relpath(Path(path).resolve(), ROOT)}:{number}"
