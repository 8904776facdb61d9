"""What a drill saw and its verdict, as data and as the JSON ``--json`` prints."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..._core.phases import EXIT_SLACK
from ..report import Report
from ..status import CANNOT_CHECK

#: The server the drill starts unless ``--server`` names another.
DEFAULT_SERVER = "uvicorn"


class DrillError(Exception):
    """The drill cannot be run; the message is a one-line reason, ``tail`` the server's
    last output lines when it is the server that would not run."""

    def __init__(self, reason: str, tail: list[str] | None = None) -> None:
        super().__init__(reason)
        self.tail = tail or []


@dataclass(slots=True)
class Answer:
    """What one of the drill's clients got back (not ``deadlines.Outcome``, a bounded call's)."""

    url: str
    status: int | None = None
    bytes: int = 0
    error: str | None = None
    ended: float | None = None  # time.monotonic()

    @property
    def label(self) -> str:
        if self.status is None:
            return self.error or "no answer"
        return f"{self.status} {self.error}" if self.error else str(self.status)


def summary(outcomes: list[Answer]) -> str:
    """``2x 200, 1x 503``: what the clients of one URL got."""
    counts = Counter(o.label for o in outcomes)
    return ", ".join(f"{n}x {label}" for label, n in counts.most_common())


@dataclass
class Drill:
    """Everything the drill saw; ``status``/``reason`` are its verdict."""

    status: int = CANNOT_CHECK
    reason: str = ""
    server: str = DEFAULT_SERVER
    worker_class: str | None = None  # Gunicorn's, as ``serve --worker-class`` names it
    interface: str | None = None  # Granian's, as ``serve --interface`` names it
    host: str = ""
    urls: list[str] = field(default_factory=list)
    concurrency: int = 1
    budget: float | None = None
    argv: list[str] = field(default_factory=list)
    pid: int | None = None
    port: int | None = None
    outcomes: list[Answer] = field(default_factory=list)
    seen_in_flight: int = 0
    sent_at: float | None = None
    signalled_at: float | None = None
    exited_at: float | None = None
    exit_code: int | None = None
    killed: bool = False
    watchdog: bool = False
    leftover: int = 0
    report: Report | None = None
    problems: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The server as the lines name it: ``uvicorn``, ``gunicorn (asgi worker)``,
        ``granian (rsgi interface)``."""
        if self.worker_class:
            return f"{self.server} ({self.worker_class} worker)"
        if self.interface:
            return f"{self.server} ({self.interface} interface)"
        return self.server

    @property
    def exit_after(self) -> float | None:
        if self.signalled_at is None or self.exited_at is None:
            return None
        return self.exited_at - self.signalled_at

    def of(self, url: str) -> list[Answer]:
        """The outcomes of the clients of ``url``."""
        return [o for o in self.outcomes if o.url == url]

    def after_signal(self, when: float | None) -> float | None:
        """``when`` (``time.monotonic()``) in seconds after SIGTERM, or None."""
        if when is None or self.signalled_at is None:
            return None
        return _round(when - self.signalled_at)

    def within_budget(self) -> bool | None:
        after = self.exit_after
        if after is None or self.budget is None:
            return None
        return not self.killed and after <= self.budget + EXIT_SLACK

    def as_dict(self) -> dict[str, Any]:
        found = self.report.as_dict() if self.report is not None else {}
        signal_after = None
        if self.sent_at is not None and self.signalled_at is not None:
            signal_after = self.signalled_at - self.sent_at
        return {
            "status": self.status,
            "reason": self.reason,
            "server": self.server,
            "worker_class": self.worker_class,
            "interface": self.interface,
            "host": self.host,
            "command": self.argv,
            "pid": self.pid,
            "budget": self.budget,
            "requests": [
                {
                    "url": url,
                    "concurrency": self.concurrency,
                    "summary": summary(self.of(url)),
                    "outcomes": [
                        {
                            "status": o.status,
                            "bytes": o.bytes,
                            "error": o.error,
                            "ended_after_signal": self.after_signal(o.ended),
                        }
                        for o in self.of(url)
                    ],
                }
                for url in dict.fromkeys(self.urls)
            ],
            "in_flight_at_signal": self.seen_in_flight,
            "signal_after": _round(signal_after),
            "exit": {
                "after": _round(self.exit_after),
                "code": self.exit_code,
                "within_budget": self.within_budget(),
                "killed": self.killed,
                "watchdog": self.watchdog,
                "leftover_processes": self.leftover,
            },
            "problems": self.problems,
            "store": found.get("store", ""),
            "rows": found.get("rows", []),
            "workers": found.get("workers", []),
            "skipped": found.get("skipped", []),
            "log": self.log,
            "notes": self.notes,
            "tail": self.tail,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
