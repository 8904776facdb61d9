"""The drill's verdict: its server's last reports, its exit and its leftovers, as one status."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator

from ..._core.phases import EXIT_SLACK
from ..report import SOURCE_DIED, Report, check
from ..status import CANNOT_CHECK, OK, PROBLEMS
from ..stores import BoundedStore, Store, StoreError
from .model import Drill
from .output import tail_of


def judge(drill: Drill, store: Store, seen_pids: set[int], output: str) -> None:
    """Set ``drill.report``, ``problems``, ``status`` and ``reason``, from what the
    server's workers left in ``store``, the workers seen publishing and its ``output``."""
    assert drill.budget is not None
    report = _own_report(store, drill.host)
    drill.report = report
    problems = Counter(row.hang for row in report.rows)
    listed = [f"{n} {kind}" for kind, n in problems.most_common()]
    for worker in report.workers:
        if worker.source == SOURCE_DIED:
            listed.append(f"worker {worker.pid} ended without a shutdown report")
    for pid in sorted(seen_pids - {w.pid for w in report.workers}):
        listed.append(f"worker {pid} left no shutdown report")
    after = drill.exit_after or 0.0
    name = drill.label
    if drill.killed:
        listed.append("did not exit")
        how = f"{name} still running {after:.1f} s after SIGTERM: killed"
    else:
        if drill.watchdog:
            listed.append("ended by the watchdog")
        elif after > drill.budget + EXIT_SLACK:
            listed.append("exited past the budget")
        how = f"{name} exited {after:.1f} s after SIGTERM"
    if drill.leftover:
        s = "es" * (drill.leftover != 1)
        listed.append(f"{drill.leftover} process{s} outlived the server")
    how += f", budget {drill.budget:.1f} s"
    drill.problems = listed
    published = bool(report.workers or seen_pids)
    gave_up = store.gave_up if isinstance(store, BoundedStore) else None
    if not published:
        drill.tail = tail_of(output)
        silent = (
            f"the server published no state in {report.store}: is the ASGI application "
            "wrapped in GracefulASGI?"
            if gave_up is None
            else f"{gave_up}: what the server published cannot be read"
        )
        drill.notes.append(silent)
    if listed:
        n = len(report.rows) + len(listed) - len(problems)  # each hung item, each finding
        drill.status = PROBLEMS
        drill.reason = f"{n} problem{'s' * (n != 1)}: {', '.join(listed)} ({how})"
    elif not published:
        drill.status = CANNOT_CHECK
        drill.reason = f"cannot check: {silent} ({how})"
    else:
        drill.status = OK
        drill.reason = f"OK: nothing hung ({how})"
    report.status, report.reason = drill.status, drill.reason


def _own_report(store: Store, host: str) -> Report:
    """What ``checkshutdown`` finds in ``store``, of host id ``host`` only."""
    with _as_host(host):  # so that check() sees the drill's dead workers as dead
        full = check(store)
    try:
        documents, unreadable = store.host_documents(host)
    except StoreError:
        documents, unreadable = [], []
    sources = {d.source for d in documents} | {s.source for s in unreadable}
    return Report(
        OK,
        "",
        rows=[row for row in full.rows if row.host == host],
        workers=[worker for worker in full.workers if worker.host == host],
        skipped=[s for s in full.skipped if s.source in sources],
        store=full.store,
    )


@contextlib.contextmanager
def _as_host(host: str) -> Iterator[None]:
    """Read the store as the drill's server's host (``check()`` reads the env's host id)."""
    previous = os.environ.get("GRACEFUL_HOST_ID")
    os.environ["GRACEFUL_HOST_ID"] = host
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("GRACEFUL_HOST_ID", None)
        else:
            os.environ["GRACEFUL_HOST_ID"] = previous
