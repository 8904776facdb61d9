"""What the server's own output says: its last lines, its warnings, the watchdog, a taken port."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from .client import READY_PATH

#: Server output lines shown when the drill cannot run (the tail of its output).
TAIL_LINES = 40
#: Server output lines worth showing with the verdict: our warnings, the watchdog's.
NOTEWORTHY = re.compile(
    r"\b(WARNING|ERROR|CRITICAL)\b|hung at shutdown|process still alive|did not finish within"
)
#: What the watchdog writes when it ends a process that outlived the budget.
WATCHDOG = "process still alive"
PORT_IN_USE = re.compile(r"address already in use|errno 98|errno 48", re.IGNORECASE)


def read(log_path: Path) -> str:
    """All the server wrote (nothing if it wrote nothing)."""
    return log_path.read_text(errors="replace") if log_path.exists() else ""


def tail(log_path: Path, lines: int = TAIL_LINES) -> list[str]:
    return tail_of(read(log_path), lines)


def tail_of(output: str, lines: int = TAIL_LINES) -> list[str]:
    return [line.rstrip() for line in output.splitlines()[-lines:]]


def port_taken(lines: list[str]) -> bool:
    """Whether the server said its port was taken (another process got it meanwhile)."""
    return PORT_IN_USE.search("\n".join(lines)) is not None


def watchdog_acted(output: str) -> bool:
    """Whether the watchdog ended the server (it outlived the budget)."""
    return WATCHDOG in output


def noteworthy(output: str) -> list[str]:
    """The server's lines about what did not stop (warnings and worse, the watchdog); a
    line repeated with other numbers (times, counts) is shown once, with how often."""
    lines: list[str] = []
    seen: Counter[str] = Counter()
    first: dict[str, int] = {}
    for line in output.splitlines():
        if not NOTEWORTHY.search(line) or line.startswith((" ", "\t")) or READY_PATH in line:
            continue
        key = re.sub(r"\d+", "#", line)
        seen[key] += 1
        if key not in first:
            first[key] = len(lines)
            lines.append(line.rstrip())
    for key, n in seen.items():
        if n > 1:
            lines[first[key]] += f"  (and {n - 1} more like it)"
    return lines
