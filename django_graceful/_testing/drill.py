"""A real server's shutdown drill (``manage.py checkshutdown --drill``) run from a test."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DrillOutcome:
    """A shutdown drill's verdict: ``hung``, the exit ``status`` (0/1/2 as the command's),
    its JSON report as ``data`` and as ``text``; ``summary`` for an assertion message."""

    status: int
    hung: bool
    text: str
    data: dict[str, Any]

    @property
    def summary(self) -> str:
        lines = [str(self.data.get("reason") or self.text.strip().splitlines()[-1:])]
        for row in self.data.get("rows") or []:
            what = f"{row.get('view') or row.get('kind')} ({row.get('what')})"
            lines.append(f"  {what}: {row.get('hang')} at {row.get('location') or '?'}")
        return "\n".join(lines)


def run_drill(
    urls: Iterable[str] = ("/",),
    *,
    server: str = "uvicorn",
    concurrency: int = 1,
    **options: Any,
) -> DrillOutcome:
    """``manage.py checkshutdown --drill`` in this process: start the project on a real
    server, send requests, SIGTERM, read what did not stop."""
    from django.core.management import call_command

    out, err = io.StringIO(), io.StringIO()
    args = ["checkshutdown", "--drill", "--json", "--server", server]
    args += ["--concurrency", str(concurrency)]
    for url in urls:
        args += ["--url", url]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    try:
        call_command(*args, stdout=out, stderr=err)
        status = 0
    except SystemExit as exc:
        status = int(exc.code or 0)
    text = out.getvalue()
    try:
        data = json.loads(text)
    except ValueError:
        data = {}
    return DrillOutcome(status, status == 1, text + err.getvalue(), data)
