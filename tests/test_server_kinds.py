"""The one description of how each server is started: kinds, serve's names for them, and
the two forms of the command line (a user's, and serve's with the budget's backstop)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from django_graceful._cli.servers import (
    KINDS,
    SERVERS,
    command,
    console_script,
    kind_of,
    python_module,
)


@pytest.mark.parametrize(
    ("server", "options", "name"),
    [
        ("uvicorn", {}, "uvicorn"),
        ("hypercorn", {}, "hypercorn"),
        ("granian", {}, "granian"),
        ("granian", {"interface": "asgi"}, "granian"),
        ("granian", {"interface": "rsgi"}, "granian-rsgi"),
        ("daphne", {}, "daphne"),
        ("gunicorn", {}, "gunicorn-uvicorn"),
        ("gunicorn", {"worker_class": "uvicorn"}, "gunicorn-uvicorn"),
        ("gunicorn", {"worker_class": "asgi"}, "gunicorn-asgi"),
    ],
)
def test_serves_options_name_a_kind(server: str, options: dict[str, str], name: str) -> None:
    kind = kind_of(server, **options)
    assert kind is KINDS[name] and kind.server == server


def test_every_kind_is_one_of_serves_servers_and_every_server_has_a_kind() -> None:
    assert {kind.server for kind in KINDS.values()} == set(SERVERS)
    assert [name for name, kind in KINDS.items() if not kind.has_workers] == ["daphne"]
    for kind in KINDS.values():
        assert kind.distributions[0] == kind.server
        options = {"worker_class": kind.worker_class, "interface": kind.interface}
        assert kind_of(kind.server, **options) is kind


def line(name: str, **options: Any) -> list[str]:
    return command(KINDS[name], "p.asgi:app", host="127.0.0.1", port=8000, **options)


def test_a_users_line_runs_the_console_script_with_the_servers_defaults() -> None:
    """Granian's own interface (RSGI) is not named, no timeout is set."""
    assert console_script(KINDS["granian"]) == [str(Path(sys.executable).parent / "granian")]
    assert line("granian-rsgi")[1:] == ["--host", "127.0.0.1", "--port", "8000", "p.asgi:app"]
    assert line("granian")[1:3] == ["--interface", "asgi"]
    assert line("gunicorn-uvicorn", workers=2)[1:] == [
        *["p.asgi:app", "--bind", "127.0.0.1:8000"],
        *["--worker-class", "uvicorn_worker.UvicornWorker", "--workers", "2"],
    ]


def test_with_a_budget_the_line_names_the_interface_and_sets_the_backstop() -> None:
    rsgi = line("granian-rsgi", budget=3.2, program=python_module(KINDS["granian-rsgi"]))
    assert rsgi == [
        *[sys.executable, "-m", "granian", "--interface", "rsgi", "--host", "127.0.0.1"],
        *["--port", "8000", "--workers-kill-timeout", "6", "p.asgi:app"],
    ]


def test_daphne_runs_one_process() -> None:
    assert "--workers" not in line("daphne", workers=1)
    with pytest.raises(ValueError, match="daphne runs one process"):
        line("daphne", workers=2)
