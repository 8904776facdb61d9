"""Fast tests run in-process against the test project; ``-m server`` ones start real servers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")
django.setup()

from django_graceful._core.lifecycle import Lifecycle, reset_lifecycle  # noqa: E402
from django_graceful._serving.handler import GracefulASGIHandler  # noqa: E402
from django_graceful.asgi import GracefulASGI  # noqa: E402

from .inprocess import Events  # noqa: E402

pytest_plugins = ["pytester"]


@pytest.fixture
def lifecycle() -> Iterator[Lifecycle]:
    """A fresh process lifecycle for one test."""
    yield reset_lifecycle()
    reset_lifecycle()


@pytest.fixture
def app(lifecycle: Lifecycle) -> GracefulASGI:
    """The test project's Django app wrapped in GracefulASGI, with its own lifecycle."""
    return GracefulASGI(GracefulASGIHandler(), lifecycle=lifecycle)


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Events:
    """The test project's events (tests/project/events.py) recorded during this test."""
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv("GRACEFUL_TEST_EVENTS", str(path))

    def read(name: str) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines() if line]
        return [row for row in rows if row["event"] == name]

    return read
