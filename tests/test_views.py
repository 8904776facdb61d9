"""Health endpoints: readiness follows the phase; liveness answers while the loop does."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from django.test import AsyncClient
from django.urls import include, path

from django_graceful._core.lifecycle import Lifecycle
from django_graceful._core.phases import Phase
from django_graceful._serving.protocol import SHUTTING_DOWN_BODY
from django_graceful.asgi import GracefulASGI

from .inprocess import NO_SIGNALS, request, start


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


#: The health URLs under a prefix of the project's choosing (ROOT_URLCONF of the tests below).
urlpatterns = [path("probes/k8s/", include("django_graceful.urls"))]


@pytest.mark.parametrize("prefix", ["/health/", "/probes/k8s/"])
async def test_while_closing_live_says_alive_and_ready_answers_its_own_503(
    app: GracefulASGI, prefix: str, settings: Any
) -> None:
    settings.GRACEFUL = NO_SIGNALS
    urlconf = "tests.test_views" if prefix == "/probes/k8s/" else "tests.project.urls"
    settings.ROOT_URLCONF = urlconf
    await start(app)
    app.lifecycle.phase = Phase.CLOSING
    live = await request(app, f"{prefix}live/")
    ready = await request(app, f"{prefix}ready/")
    other = await request(app, "/pid/")
    assert live[0] == 200 and json.loads(live[2]) == {"phase": "closing"}
    assert ready[0] == 503 and json.loads(ready[2]) == {"phase": "closing"}
    assert other[0] == 503 and other[2] == SHUTTING_DOWN_BODY  # the rest is refused as before


async def test_a_readiness_503_is_logged_as_information_not_as_an_error(
    lifecycle: Lifecycle, caplog: pytest.LogCaptureFixture
) -> None:
    lifecycle.phase = Phase.DRAINING
    with caplog.at_level(logging.INFO, "django.request"):
        response = await AsyncClient().get("/health/ready/")
    assert response.status_code == 503
    [record] = [r for r in caplog.records if r.name == "django.request"]
    assert (
        record.levelno == logging.INFO and "Service Unavailable: /health/ready/" in record.message
    )
