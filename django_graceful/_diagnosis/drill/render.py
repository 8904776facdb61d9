"""A drill shown: lines for a person (stdout, the server's words on stderr), or JSON."""

from __future__ import annotations

import contextlib
import signal
from typing import Any

from ..._core import safetext
from ..report import table
from .client import HOST
from .model import Drill, summary

#: The most server log lines about what did not stop shown with a verdict.
MAX_LOG_LINES = 20


def show(drill: Drill, as_json: bool, stdout: Any, stderr: Any) -> None:
    if as_json:
        stdout.write(safetext.dumps(drill.as_dict(), indent=2))
        stdout.flush()
        return
    if drill.budget is not None and drill.pid is not None:
        stdout.write(
            f"drill: {drill.label}, pid {drill.pid} on {HOST}:{drill.port}, shutdown budget "
            f"{drill.budget:.1f} s"
        )
        width = max((len(url) for url in drill.urls), default=0)
        for url in dict.fromkeys(drill.urls):
            outcomes = drill.of(url)
            ends = sorted(t for o in outcomes if (t := drill.after_signal(o.ended)) is not None)
            stdout.write(f"  GET {url.ljust(width)}  {summary(outcomes)}{when(ends)}")
        if drill.signalled_at is not None:
            n = len(drill.outcomes)
            line = f"  SIGTERM with {drill.seen_in_flight} of {n} request{'s' * (n != 1)} in flight"
            if drill.exit_after is not None:
                verb = "killed" if drill.killed else "exited"
                line += f"; {verb} after {drill.exit_after:.1f} s ({exit_status(drill.exit_code)})"
            stdout.write(line)
    if drill.report is not None and drill.report.rows:
        stdout.write(table(drill.report))
    stdout.flush()  # in order with stderr, when both go to one CI log
    # the server's own words: its output's tail when it would not run, else its warnings
    lines = drill.tail or drill.log[:MAX_LOG_LINES]
    if not drill.tail and len(drill.log) > MAX_LOG_LINES:
        lines.append(f"… {len(drill.log) - MAX_LOG_LINES} more lines")
    for line in lines:
        stderr.write(f"server: {safetext.visible(line)}")
    for line in drill.notes:
        stderr.write(line)
    stderr.flush()
    stdout.write(drill.reason)
    stdout.flush()


def when(ends: list[float]) -> str:
    """When the clients of one URL got their answer, relative to SIGTERM."""
    if not ends:
        return ""
    low, high = ends[0], ends[-1]
    if high < 0:
        low, high, side = -high, -low, "before"
    elif low >= 0:
        side = "after"
    else:
        return f"  (ended {-low:.1f} s before to {high:.1f} s after SIGTERM)"
    span = f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f} to {high:.1f}"
    return f"  (ended {span} s {side} SIGTERM)"


def exit_status(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"ended by {signal.Signals(-code).name}"
        return f"ended by signal {-code}"
    return f"exit status {code}"
