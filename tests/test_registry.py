"""What work is called: a request's label is visible, bounded, and redacted on demand."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from django_graceful._core.lifecycle import Lifecycle
from django_graceful._core.registry import (
    MAX_PATH,
    MAX_WHAT,
    Tracked,
    WorkKind,
    request_label,
    request_of,
    route_label,
)
from django_graceful._diagnosis.publisher import Publisher
from django_graceful._diagnosis.snapshot import host_id
from django_graceful._diagnosis.stores import FileStore

from .inprocess import NO_SIGNALS


def test_a_request_is_called_by_its_method_and_path() -> None:
    assert request_label("GET", "/orders/7/") == "GET /orders/7/"
    assert request_of("GET /orders/7/") == ("GET", "/orders/7/")


def test_a_path_with_an_escape_sequence_is_labelled_with_it_visible() -> None:
    label = request_label("GET", "/x\x1b[31mRED\n\u202e/")
    assert label == "GET /x\\x1b[31mRED\\n\\u202e/"


def test_a_long_path_is_cut_with_a_marker() -> None:
    label = request_label("GET", "/" + "a" * 16_384)
    method, path = request_of(label)
    assert method == "GET" and len(path) == MAX_PATH and path.endswith("a…")
    assert request_label("GET", "/" + "a" * (MAX_PATH - 1)) == "GET /" + "a" * (MAX_PATH - 1)
    assert len(request_label("X" * 5000, "/")) < 30


def test_any_work_is_named_visibly_and_bounded() -> None:
    task = Tracked(WorkKind.TASK, "poll \x1b]0;title\x07" + "q" * 10_000)
    assert task.what.startswith("poll \\x1b]0;title\\x07q") and len(task.what) == MAX_WHAT


def test_a_redacted_request_shows_its_first_segment_until_its_route_is_known() -> None:
    assert request_label("GET", "/orders/7/items/", redact=True) == "GET /orders/…"
    assert request_label("GET", "/orders/", redact=True) == "GET /orders/"
    assert request_label("GET", "/token-abc", redact=True) == "GET /…"
    assert request_label("GET", "//orders/7/", redact=True) == "GET /orders/…"
    assert request_label("GET", "/", redact=True) == "GET /"
    label = request_label("GET", "/orders/7/", redact=True)
    assert route_label(label, "orders/<int:id>/") == "GET /orders/<int:id>/"
    assert route_label(label, "^orders/(?P<id>[0-9]+)/$") == "GET /orders/(?P<id>[0-9]+)/$"


async def test_a_snapshot_of_2000_requests_with_16_kb_paths_stays_small(
    lifecycle: Lifecycle, tmp_path: Path, settings: Any
) -> None:
    """Unbounded, these labels made a 32 MB snapshot (and 100-250 ms per heartbeat)."""
    settings.GRACEFUL = {**NO_SIGNALS, "LIFESPAN": []}
    lifecycle.loop = asyncio.get_running_loop()
    pub = Publisher(lifecycle, FileStore(str(tmp_path / "state"), host_id(), os.getpid()))
    pub.store.prepare()
    for n in range(2000):
        path = f"/search/{n}/" + "q" * 16_384
        lifecycle.registry.add(Tracked(WorkKind.REQUEST, request_label("GET", path)))
    pub.publish()
    (written,) = (tmp_path / "state").iterdir()
    assert written.stat().st_size < 2000 * (MAX_PATH + 40)  # 0.7 MB, was 32 MB
