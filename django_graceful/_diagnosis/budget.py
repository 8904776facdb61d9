"""``checkshutdown --budget``: the shutdown's budget, and the least a deployment gives it.

Read from the settings and the hooks registered once the apps are ready (as every
management command sees them: a hook connected only in ``asgi.py`` is not counted):

- the budget's parts, and the time within which a worker is gone (the watchdog ends it
  ``EXIT_SLACK`` after the budget);
- the least each timeout around the worker may be, so that none cuts the shutdown short:
  Kubernetes' ``terminationGracePeriodSeconds`` and each server's own last-resort timeout
  (the flags ``manage.py serve`` passes, the same numbers);
- given the balancer's readiness probe, the least ``DRAIN_DELAY``: a balancer sends new
  requests to a stopping worker until its probe of ``/health/ready/`` has failed
  ``failure threshold`` times, ``period`` apart, and the change has reached it (Kubernetes:
  the endpoints' update). A shorter delay answers those requests 503 + ``Connection:
  close`` rather than serving them.

A deploy pipeline reads ``--json`` and checks its manifests against the code it ships.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .. import signals
from .._cli.servers import KINDS, SERVER_MARGIN, backstop
from .._core import safetext
from .._core.hooks import hook_name, receivers
from .._core.lifecycle import Lifecycle
from .._core.phases import EXIT_SLACK
from ..conf import ImproperlyConfiguredGraceful
from .status import CANNOT_CHECK, OK, PROBLEMS

#: What each part of the budget is for, in the order the shutdown runs them.
PARTS = {
    "DRAIN_DELAY": "readiness answers 503, requests are still served",
    "GRACE_PERIOD": "work in flight finishes by itself",
    "CANCEL_TIMEOUT": "what is left is cancelled and unwinds",
    "shutdown_started": "shutdown_started receivers",
    "LIFESPAN": "the LIFESPAN managers' exits (HOOK_TIMEOUT each)",
    "shutdown": "shutdown receivers (on_shutdown)",
}
#: The servers' timeouts shown, by the kind whose flags they are.
SERVER_KINDS = ("uvicorn", "hypercorn", "granian", "gunicorn-uvicorn", "daphne")
#: Kubernetes' defaults for a readiness probe (``periodSeconds``, ``failureThreshold``):
#: what the probe is taken to be where only some of it is given.
KUBERNETES_PERIOD = 10.0
KUBERNETES_FAILURES = 3


@dataclass(frozen=True)
class Probe:
    """The balancer's readiness probe of ``/health/ready/``."""

    period: float
    failure_threshold: int
    endpoint_delay: float = 0.0

    @property
    def least_drain(self) -> float:
        """How long after the signal new requests may still come."""
        return self.period * self.failure_threshold + self.endpoint_delay

    def describe(self) -> str:
        delay = f" + {self.endpoint_delay:g} s" if self.endpoint_delay else ""
        return f"{self.period:g} s x {self.failure_threshold}{delay}"


def budget_report(lifecycle: Lifecycle, probe: Probe | None) -> dict[str, Any]:
    """What ``--budget`` says, as data (``--json`` prints it as it is)."""
    parts = lifecycle.budget_parts()
    total = sum(parts.values())
    least = math.ceil(total) + SERVER_MARGIN
    hooks = {
        name: [hook_name(r) for r in receivers(signal, Lifecycle)]
        for name, signal in (
            ("shutdown_started", signals.shutdown_started),
            ("shutdown", signals.shutdown),
        )
    }
    report: dict[str, Any] = {
        "budget": total,
        "parts": parts,
        "hooks": hooks,
        "lifespan": list(lifecycle.settings.LIFESPAN),
        "gone_within": total + EXIT_SLACK,
        "least": {
            "terminationGracePeriodSeconds": least,
            **{KINDS[k].server: backstop(KINDS[k], total) for k in SERVER_KINDS},
        },
        "drain": None,
    }
    if probe is not None:
        drain = parts["DRAIN_DELAY"]
        report["drain"] = {
            "setting": drain,
            "least": probe.least_drain,
            "probe": probe.describe(),
            "enough": drain >= probe.least_drain,
        }
    return report


def render(report: dict[str, Any]) -> list[str]:
    """The report as lines for a person."""
    lines = [f"shutdown budget: {report['budget']:g} s from the first signal to STOPPED"]
    named = {**report["hooks"], "LIFESPAN": report["lifespan"]}
    for part, seconds in report["parts"].items():
        what = PARTS[part]
        if part in named:
            names = named[part]
            what = f"{what}: {', '.join(names)}" if names else f"{what}: none"
        lines.append(f"  {part:<17} {seconds:>6g} s   {what}")
    lines += [
        f"a worker is gone within {report['gone_within']:g} s (the watchdog ends it "
        f"{EXIT_SLACK:g} s after the budget)",
        "",
        f"the least each timeout around it may be (the budget + {SERVER_MARGIN} s, whole seconds):",
    ]
    least = report["least"]
    lines.append(
        f"  Kubernetes terminationGracePeriodSeconds: {least['terminationGracePeriodSeconds']}"
    )
    for server in (KINDS[k].server for k in SERVER_KINDS):
        lines.append(f"  {server} {' '.join(least[server])}")
    lines.append("")
    drain = report["drain"]
    if drain is None:
        lines.append(
            "DRAIN_DELAY: a balancer sends new requests until its readiness probe has failed "
            "(period x failure threshold) and the change has reached it; give "
            "--readiness-period P --failure-threshold N [--endpoint-delay S] to check it"
        )
    elif drain["enough"]:
        lines.append(
            f"DRAIN_DELAY {drain['setting']:g} s covers the readiness probe's "
            f"{drain['least']:g} s ({drain['probe']})"
        )
    else:
        lines.append(
            f"DRAIN_DELAY {drain['setting']:g} s is shorter than the readiness probe's "
            f"{drain['least']:g} s ({drain['probe']}): requests the balancer still sends "
            "meanwhile get 503 + Connection: close; set GRACEFUL['DRAIN_DELAY'] to "
            f"{drain['least']:g} (the budget and each timeout above grow by as much)"
        )
    return lines


def main(options: dict[str, Any], stdout: Any, stderr: Any) -> int:
    """``checkshutdown --budget``: exit status 0, 1 where DRAIN_DELAY is shorter than the
    probe given needs, 2 for settings that cannot be read."""
    probe = probe_of(options)
    try:
        report = budget_report(Lifecycle(), probe)
    except ImproperlyConfiguredGraceful as exc:
        stderr.write(f"cannot check: {exc}")
        return CANNOT_CHECK
    if options.get("json"):
        stdout.write(safetext.dumps(report, indent=2))
    else:
        for line in render(report):
            stdout.write(line)
    stdout.flush()
    drain = report["drain"]
    return PROBLEMS if drain is not None and not drain["enough"] else OK


def probe_of(options: dict[str, Any]) -> Probe | None:
    """The probe given on the command line (Kubernetes' defaults for what is not); None
    if nothing of it was."""
    period, threshold = options.get("readiness_period"), options.get("failure_threshold")
    delay = options.get("endpoint_delay")
    if period is None and threshold is None and delay is None:
        return None
    return Probe(
        period=KUBERNETES_PERIOD if period is None else period,
        failure_threshold=KUBERNETES_FAILURES if threshold is None else threshold,
        endpoint_delay=delay or 0.0,
    )
