"""Health endpoints: readiness follows the phase; liveness answers while the loop does."""

from __future__ import annotations

import pytest
from django.test import AsyncClient

from django_graceful._core.lifecycle import Lifecycle
from django_graceful._core.phases import Phase


@pytest.mark.parametrize(
    ("phase", "status"),
    [
        (Phase.NEW, 503),
        (Phase.SERVING, 200),
        (Phase.DRAINING, 503),
        (Phase.CLOSING, 503),
        (Phase.STOPPED, 503),
    ],
)
async def test_ready_follows_the_phase(lifecycle: Lifecycle, phase: Phase, status: int) -> None:
    lifecycle.phase = phase
    response = await AsyncClient().get("/health/ready/")
    assert response.status_code == status
    assert response.json() == {"phase": phase.name.lower()}
    assert "no-cache" in response["Cache-Control"]


async def test_live_answers_200_while_draining(lifecycle: Lifecycle) -> None:
    lifecycle.phase = Phase.DRAINING
    response = await AsyncClient().get("/health/live/")
    assert response.status_code == 200
