"""``checkshutdown --budget``: the budget's parts, the least of each timeout around a worker
(the same numbers ``serve`` passes), and DRAIN_DELAY checked against a readiness probe."""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from django_graceful import on_shutdown, signals
from django_graceful._cli.servers import SERVER_MARGIN

PHASES = {"DRAIN_DELAY": 1, "GRACE_PERIOD": 10, "CANCEL_TIMEOUT": 3, "HOOK_TIMEOUT": 2}


@pytest.fixture
def hook() -> Iterator[str]:
    """An ``on_shutdown`` hook of 1.5 s, registered for the test only; its name."""
    before = list(signals.shutdown.receivers)

    @on_shutdown(timeout=1.5)
    async def flush_producer() -> None: ...

    yield f"{__name__}.hook.<locals>.flush_producer"
    signals.shutdown.receivers[:] = before
    signals.shutdown.sender_receivers_cache.clear()


def budget(*args: str, lifespan: tuple[str, ...] = ()) -> tuple[int, str]:
    """The command's exit status and output, with :data:`PHASES` and ``lifespan``."""
    out = StringIO()
    graceful = {**PHASES, "LIFESPAN": list(lifespan)}
    with override_settings(GRACEFUL=graceful), pytest.raises(SystemExit) as exited:
        call_command("checkshutdown", "--budget", *args, stdout=out)
    return int(exited.value.code or 0), out.getvalue()


def report(*args: str, **kwargs: Any) -> dict[str, Any]:
    status, out = budget("--json", *args, **kwargs)
    assert status in (0, 1)
    return dict(json.loads(out))


def test_the_budget_is_its_phases_and_each_hook_s_bound(hook: str) -> None:
    found = report(lifespan=("tests.project.lifespan.resources",))
    parts = found["parts"]
    assert (parts["DRAIN_DELAY"], parts["GRACE_PERIOD"], parts["CANCEL_TIMEOUT"]) == (1, 10, 3)
    assert parts["LIFESPAN"] == 2  # one manager, HOOK_TIMEOUT
    assert hook in found["hooks"]["shutdown"]
    assert parts["shutdown"] >= 1.5
    assert found["budget"] == sum(parts.values())
    assert found["gone_within"] == found["budget"] + 1  # the watchdog's EXIT_SLACK


def test_each_timeout_around_the_worker_is_the_budget_and_a_margin() -> None:
    found = report()
    least = math.ceil(found["budget"]) + SERVER_MARGIN
    assert found["least"]["terminationGracePeriodSeconds"] == least
    assert found["least"]["uvicorn"] == ["--timeout-graceful-shutdown", str(least)]
    assert found["least"]["gunicorn"][:2] == ["--graceful-timeout", str(least)]
    assert found["least"]["granian"] == ["--workers-kill-timeout", str(least)]


def test_serve_passes_the_numbers_budget_prints() -> None:
    least = report()["least"]
    out = StringIO()
    settings = {"ASGI_APPLICATION": "tests.project.asgi.application", "GRACEFUL": PHASES}
    with override_settings(**settings):
        call_command("serve", "--server", "hypercorn", "--print", stdout=out)
    argv = shlex.split(out.getvalue())
    flag = least["hypercorn"][0]
    assert argv[argv.index(flag) + 1] == least["hypercorn"][1]


@pytest.mark.parametrize(
    ("probe", "least", "status"),
    [
        (["--readiness-period", "0.5", "--failure-threshold", "2"], 1.0, 0),
        (["--readiness-period", "5", "--failure-threshold", "1", "--endpoint-delay", "2"], 7, 1),
        (["--endpoint-delay", "1"], 31, 1),  # Kubernetes' defaults: 10 s x 3
    ],
)
def test_drain_delay_is_checked_against_the_readiness_probe(
    probe: list[str], least: float, status: int
) -> None:
    code, out = budget(*probe)
    assert code == status
    if status:
        assert f"DRAIN_DELAY 1 s is shorter than the readiness probe's {least:g} s" in out
        assert f"set GRACEFUL['DRAIN_DELAY'] to {least:g}" in out
    else:
        assert f"DRAIN_DELAY 1 s covers the readiness probe's {least:g} s" in out


def test_without_a_probe_it_says_how_to_check_drain_delay() -> None:
    status, out = budget()
    assert status == 0
    total = report()["budget"]
    assert out.splitlines()[0] == f"shutdown budget: {total:g} s from the first signal to STOPPED"
    assert "--readiness-period P --failure-threshold N" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--readiness-period", "5"], "--readiness-period needs --budget"),
        (["--budget", "--timeout", "1"], "not with --budget"),
        (["--budget", "--pid", "1"], "not with --budget"),
    ],
)
def test_options_that_do_not_go_with_budget_are_refused(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("checkshutdown", *args)


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_a_bad_probe_period_is_a_usage_error(value: str) -> None:
    with pytest.raises(CommandError, match="--readiness-period"):
        call_command("checkshutdown", "--budget", "--readiness-period", value)
