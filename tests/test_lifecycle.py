"""The lifecycle's budget: fitting the shutdown into a server's own kill timeout."""

from __future__ import annotations

import logging

import pytest

from django_graceful._core.lifecycle import MIN_CANCEL, Lifecycle
from django_graceful.conf import GracefulSettings


def lifecycle(drain: float, grace: float, cancel: float, hook: float = 1.0) -> Lifecycle:
    """A lifecycle on these settings, with one LIFESPAN manager (never entered here) so
    that its hooks take ``hook`` seconds of the budget at least."""
    settings = GracefulSettings(
        DRAIN_DELAY=drain,
        GRACE_PERIOD=grace,
        CANCEL_TIMEOUT=cancel,
        HOOK_TIMEOUT=hook,
        LIFESPAN=("tests.project.lifespan.resources",),
    )
    return Lifecycle(settings=settings)


def hooks_of(it: Lifecycle) -> float:
    s = it.settings
    return it.budget() - s.DRAIN_DELAY - s.GRACE_PERIOD - s.CANCEL_TIMEOUT


def test_a_budget_that_fits_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    it = lifecycle(2, 20, 5)
    limit = it.budget() + 0.1
    with caplog.at_level(logging.WARNING, "django_graceful"):
        assert it.limit_budget(limit, "gunicorn's graceful_timeout") is True
    s = it.settings
    assert (s.DRAIN_DELAY, s.GRACE_PERIOD, s.CANCEL_TIMEOUT) == (2, 20, 5)
    assert caplog.records == []


def test_the_drain_delay_gives_way_first_then_the_grace(caplog: pytest.LogCaptureFixture) -> None:
    it = lifecycle(2, 20, 5)
    hooks = hooks_of(it)
    with caplog.at_level(logging.WARNING, "django_graceful"):
        assert it.limit_budget(hooks + 15, "gunicorn's graceful_timeout") is True
    s = it.settings
    assert (s.DRAIN_DELAY, s.GRACE_PERIOD, s.CANCEL_TIMEOUT) == (0, 10, 5)
    assert it.budget() == pytest.approx(hooks + 15)
    message = caplog.records[0].getMessage()
    assert f"({hooks + 27:.1f} s) does not fit in gunicorn's graceful_timeout" in message
    assert f"({hooks + 15:.1f} s)" in message and "grace 10s" in message


def test_cancelled_work_keeps_a_moment_to_unwind_while_it_can() -> None:
    it = lifecycle(1, 3, 5)
    hooks = hooks_of(it)
    assert it.limit_budget(hooks + 2, "the server's timeout") is True
    s = it.settings
    assert (s.DRAIN_DELAY, s.GRACE_PERIOD, s.CANCEL_TIMEOUT) == (0, 0, 2)
    assert it.limit_budget(hooks + 0.2, "the server's timeout") is True
    assert it.settings.CANCEL_TIMEOUT == pytest.approx(0.2)
    assert MIN_CANCEL > 0.2  # the floor gave way only because nothing else could


def test_hooks_longer_than_the_limit_cannot_fit(caplog: pytest.LogCaptureFixture) -> None:
    it = lifecycle(1, 3, 5, hook=4)
    hooks = hooks_of(it)
    assert hooks >= 4
    with caplog.at_level(logging.WARNING, "django_graceful"):
        assert it.limit_budget(hooks / 2, "the server's timeout") is False
    s = it.settings
    assert (s.DRAIN_DELAY, s.GRACE_PERIOD, s.CANCEL_TIMEOUT) == (0, 0, 0)
    assert "it still does not fit" in caplog.records[0].getMessage()
