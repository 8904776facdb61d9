"""GRACEFUL settings: each bad value is a clear check error with a stable id."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from django_graceful.conf import get_settings, validate


def ids(raw: Any) -> list[str]:
    return [e.id for e in validate(raw)]


def test_defaults_are_valid_and_documented_values(settings: Any) -> None:
    settings.GRACEFUL = {}
    s = get_settings()
    assert (s.DRAIN_DELAY, s.GRACE_PERIOD, s.CANCEL_TIMEOUT, s.HOOK_TIMEOUT) == (0, 20, 5, 5)
    assert s.HANDLE_SIGNALS is True and s.STATE_BACKEND == "file" and s.LIFESPAN == ()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([], ["graceful.E001"]),
        ({"GRACE_PERIODS": 3}, ["graceful.E002"]),
        ({"GRACE_PERIOD": "20"}, ["graceful.E003"]),
        ({"CANCEL_TIMEOUT": True}, ["graceful.E003"]),
        ({"DRAIN_DELAY": float("nan")}, ["graceful.E003"]),
        ({"GRACE_PERIOD": -1}, ["graceful.E004"]),
        ({"HEARTBEAT": 0}, ["graceful.E004"]),
        ({"LIFESPAN": "a.b"}, ["graceful.E005"]),
        ({"LIFESPAN": ["no.such.module.thing"]}, ["graceful.E005"]),
        ({"LIFESPAN": [42]}, ["graceful.E005"]),
        ({"HANDLE_SIGNALS": "yes"}, ["graceful.E006"]),
        ({"REUSE_SYNC_THREADS": 1}, ["graceful.E010"]),
        ({"IDLE_SYNC_THREADS": -1}, ["graceful.E011"]),
        ({"IDLE_SYNC_THREADS": 2.5}, ["graceful.E011"]),
        ({"IDLE_SYNC_THREADS": True}, ["graceful.E011"]),
        ({"STATE_BACKEND": "redis"}, ["graceful.E007"]),
        ({"STATE_BACKEND": "cache", "STATE_CACHE": "nope"}, ["graceful.E008"]),
        ({"STATE_DIR": ""}, ["graceful.E008"]),
    ],
)
def test_bad_values_fail_with_stable_ids(raw: Any, expected: list[str]) -> None:
    assert ids(raw) == expected


def test_good_values_pass() -> None:
    raw = {
        "DRAIN_DELAY": 5,
        "GRACE_PERIOD": 0.5,
        "LIFESPAN": ["tests.project.lifespan.resources"],
        "HANDLE_SIGNALS": False,
        "STATE_BACKEND": "cache",
    }
    assert ids(raw) == []


def test_manage_py_check_fails_on_a_bad_value_with_a_hint(settings: Any) -> None:
    settings.GRACEFUL = {"GRACE_PERIOD": -3}
    with pytest.raises(SystemCheckError) as err:
        call_command("check")
    assert "graceful.E004" in str(err.value)
    assert "cannot be negative" in str(err.value)


def test_reading_bad_settings_at_runtime_raises_a_clear_error(settings: Any) -> None:
    from django_graceful.conf import ImproperlyConfiguredGraceful

    settings.GRACEFUL = {"GRACE_PERIOD": "long"}
    with pytest.raises(ImproperlyConfiguredGraceful, match=r"graceful\.E003"):
        get_settings()


def test_redact_paths_is_off_by_default_and_must_be_a_bool(settings: Any) -> None:
    settings.GRACEFUL = {}
    assert get_settings().REDACT_PATHS is False
    settings.GRACEFUL = {"REDACT_PATHS": True}
    assert get_settings().REDACT_PATHS is True
    assert ids({"REDACT_PATHS": "yes"}) == ["graceful.E009"]
    assert ids({"REDACT_PATHS": 1}) == ["graceful.E009"]
    (error,) = validate({"REDACT_PATHS": None})
    assert "must be True or False, not None" in error.msg and "route" in (error.hint or "")
