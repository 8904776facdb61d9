"""manage.py serve: the command line each server gets, and clear errors."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from django_graceful._cli.launch import app_target, command_line

SETTINGS = {"ASGI_APPLICATION": "tests.project.asgi.application"}


def serve(*args: str) -> list[str]:
    out = StringIO()
    with override_settings(**SETTINGS, GRACEFUL={"GRACE_PERIOD": 10, "CANCEL_TIMEOUT": 2}):
        call_command("serve", *args, "--print", stdout=out)
    return shlex.split(out.getvalue())


def test_uvicorn_gets_a_graceful_timeout_above_the_budget() -> None:
    argv = serve("--server", "uvicorn", "--port", "9000")
    assert argv[1:3] == ["-m", "uvicorn"] and "tests.project.asgi:application" in argv
    timeout = int(argv[argv.index("--timeout-graceful-shutdown") + 1])
    assert timeout > 10 + 2  # grace + cancel (+ hooks) is the budget; the server's is above
    assert argv[argv.index("--port") + 1] == "9000"


def test_granian_runs_the_asgi_interface_with_a_kill_timeout_above_the_budget() -> None:
    argv = serve("--server", "granian", "--workers", "2")
    assert argv[argv.index("--interface") + 1] == "asgi"
    assert int(argv[argv.index("--workers-kill-timeout") + 1]) > 12
    assert argv[argv.index("--workers") + 1] == "2"


def test_hypercorn_binds_host_and_port_and_gets_a_graceful_timeout() -> None:
    argv = serve("--server", "hypercorn", "--host", "::1", "--port", "8001")
    assert argv[argv.index("--bind") + 1] == "[::1]:8001"
    assert int(argv[argv.index("--graceful-timeout") + 1]) > 12
    assert argv[argv.index("--workers") + 1] == "0"  # one process: a failed start exits non-zero


def test_daphne_is_one_process() -> None:
    assert serve("--server", "daphne")[-1] == "tests.project.asgi:application"
    with pytest.raises(CommandError, match="daphne runs one process"):
        serve("--server", "daphne", "--workers", "2")


def test_a_missing_server_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "granian" else real(name, *a)
    )
    with pytest.raises(CommandError, match=r"pip install 'django-graceful-asgi\[granian\]'"):
        serve("--server", "granian")


@pytest.mark.parametrize("args", [["--port", "70000"], ["--workers", "0"], ["--server", "x"]])
def test_bad_arguments_are_refused(args: list[str]) -> None:
    with pytest.raises(CommandError):
        serve(*args)


def test_app_target_notation() -> None:
    assert app_target("proj.asgi.application") == "proj.asgi:application"
    assert app_target("proj.asgi:app") == "proj.asgi:app"
    with pytest.raises(ValueError):
        app_target("application")
    with pytest.raises(ValueError, match="unknown server"):
        command_line("gunicorn", "p:a", host="h", port=1, workers=None, budget=1)


def test_without_asgi_application_the_settings_packages_asgi_module_is_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The layout startproject makes: <package>/asgi.py next to <package>/settings.py,
    found without importing it (here: not imported before)."""
    import tests.project

    monkeypatch.delitem(sys.modules, "tests.project.asgi", raising=False)
    monkeypatch.delattr(tests.project, "asgi", raising=False)
    out = StringIO()
    with override_settings(ASGI_APPLICATION=None, GRACEFUL={"GRACE_PERIOD": 10}):
        call_command("serve", "--print", stdout=out)
    assert "tests.project.asgi:application" in shlex.split(out.getvalue())
    assert "tests.project.asgi" not in sys.modules
