"""graceful.W001: a project whose ASGI app skips GracefulASGI is told so."""

from django.core.checks import run_checks
from django.test import override_settings


def ids() -> list[str]:
    return [m.id for m in run_checks() if m.id and m.id.startswith("graceful.")]


def test_wrapped_application_passes() -> None:
    with override_settings(ASGI_APPLICATION="tests.project.asgi.application"):
        assert ids() == []


def test_plain_django_application_is_warned_about_with_a_fix() -> None:
    with override_settings(ASGI_APPLICATION="tests.project.asgi_plain.application"):
        messages = [m for m in run_checks() if m.id == "graceful.W001"]
    assert len(messages) == 1
    assert "get_asgi_application" in messages[0].hint


def test_channels_router_wrapped_in_graceful_asgi_passes() -> None:
    with override_settings(ASGI_APPLICATION="tests.project.asgi_channels.application"):
        assert ids() == []
