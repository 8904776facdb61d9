"""Warnings with a fix: W001 the ASGI app skips GracefulASGI, W002 a process-local state cache."""

import sys
from typing import Any

import pytest
from django.core.checks import run_checks

from django_graceful._cli.asgi_source import Verdict, read_entrypoint

#: The views' checks (tests/test_staticscan.py): the test project's views hang on purpose.
VIEW_CHECKS = {"graceful.W003", "graceful.W004", "graceful.W005", "graceful.W006"}


def ids() -> list[str]:
    return [
        m.id
        for m in run_checks()
        if m.id and m.id.startswith("graceful.") and m.id not in VIEW_CHECKS
    ]


def test_wrapped_application_passes(settings: Any) -> None:
    settings.ASGI_APPLICATION = "tests.project.asgi.application"
    assert ids() == []


def test_plain_django_application_is_warned_about_with_a_fix(settings: Any) -> None:
    settings.ASGI_APPLICATION = "tests.project.asgi_plain.application"
    messages = [m for m in run_checks() if m.id == "graceful.W001"]
    assert len(messages) == 1
    assert "get_asgi_application" in messages[0].hint


def test_channels_router_wrapped_in_graceful_asgi_passes(settings: Any) -> None:
    settings.ASGI_APPLICATION = "tests.project.asgi_channels.application"
    assert ids() == []


LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
SHARED = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "t"}}


def test_a_process_local_state_cache_is_warned_about(settings: Any) -> None:
    settings.CACHES = LOCMEM
    settings.GRACEFUL = {"STATE_BACKEND": "cache"}
    messages = [m for m in run_checks() if m.id == "graceful.W002"]
    assert len(messages) == 1 and "LocMemCache" in messages[0].msg
    settings.CACHES = SHARED
    settings.GRACEFUL = {"STATE_BACKEND": "cache"}
    assert "graceful.W002" not in ids()
    settings.CACHES = LOCMEM
    settings.GRACEFUL = {}
    assert "graceful.W002" not in ids()


def test_the_asgi_module_is_judged_from_its_source_and_never_imported(settings: Any) -> None:
    path = "tests.project.asgi_starts_things.application"
    settings.ASGI_APPLICATION = path
    messages = [m for m in run_checks() if m.id == "graceful.W001"]
    assert "tests.project.asgi_starts_things" not in sys.modules
    assert len(messages) == 1 and path in messages[0].msg


@pytest.mark.parametrize(
    ("path", "verdict"),
    [
        ("tests.project.asgi.application", Verdict.WRAPPED),  # get_asgi_application of ours
        ("tests.project.asgi_channels.application", Verdict.WRAPPED),  # GracefulASGI(router)
        ("tests.project.asgi_late_hook:application", Verdict.WRAPPED),  # from .asgi import
        ("tests.project.asgi_plain.application", Verdict.PLAIN),
        ("tests.project.asgi_starts_things.application", Verdict.PLAIN),  # asgi.get_asgi_...
        ("tests.project.views.slow", Verdict.UNKNOWN),  # not an assignment: say nothing
        ("tests.project.missing.application", Verdict.UNKNOWN),
    ],
)
def test_the_entrypoint_is_read_through_imports_and_aliases(path: str, verdict: Verdict) -> None:
    assert read_entrypoint(path) is verdict
