"""manage.py serve: the command line each server gets, and clear errors."""

from __future__ import annotations

import math
import shlex
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from django_graceful._cli.launch import app_target, command_line
from django_graceful._core.lifecycle import get_lifecycle

from .servers import not_installed

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
    assert serve("--server", "granian", "--interface", "asgi") == serve("--server", "granian")


def test_granian_runs_rsgi_with_interface_rsgi() -> None:
    """``--interface rsgi``: Granian's own interface (GracefulASGI's ``__rsgi__``), with the
    same kill timeout; the rest of the line is the ASGI one's."""
    argv = serve("--server", "granian", "--interface", "rsgi", "--port", "9000")
    assert argv[argv.index("--interface") + 1] == "rsgi"
    assert argv.count("--interface") == 1
    assert int(argv[argv.index("--workers-kill-timeout") + 1]) > 12
    assert argv[argv.index("--port") + 1] == "9000"
    assert argv[-1] == "tests.project.asgi:application"
    asgi = serve("--server", "granian", "--port", "9000")
    assert [a for a in argv if a != "rsgi"] == [a for a in asgi if a != "asgi"]


def test_hypercorn_binds_host_and_port_and_gets_a_graceful_timeout() -> None:
    argv = serve("--server", "hypercorn", "--host", "::1", "--port", "8001")
    assert argv[argv.index("--bind") + 1] == "[::1]:8001"
    assert int(argv[argv.index("--graceful-timeout") + 1]) > 12
    assert argv[argv.index("--workers") + 1] == "0"  # one process: a failed start exits non-zero


def test_daphne_is_one_process() -> None:
    assert serve("--server", "daphne")[-1] == "tests.project.asgi:application"
    with pytest.raises(CommandError, match="daphne runs one process"):
        serve("--server", "daphne", "--workers", "2")


PYTHON = sys.executable
GUNICORN = [PYTHON, "-m", "gunicorn", "tests.project.asgi:application"]
HOOKS = ["--config", "python:django_graceful.gunicorn_hooks"]


def serve_backstop() -> int:
    """The server timeout serve() sets: the budget it sees, rounded up, + 2 s."""
    with override_settings(**SETTINGS, GRACEFUL={"GRACE_PERIOD": 10, "CANCEL_TIMEOUT": 2}):
        return math.ceil(get_lifecycle().budget()) + 2


def gunicorn_flags(graceful: int, timeout: int) -> list[str]:
    return ["--graceful-timeout", str(graceful), "--timeout", str(timeout)]


def test_gunicorn_runs_the_uvicorn_worker_by_default_with_timeouts_above_the_budget() -> None:
    """The arbiter SIGKILLs its workers graceful_timeout s after the signal, and a worker
    silent for timeout s: both above the budget (timeout never below Gunicorn's 30)."""
    backstop = serve_backstop()
    assert backstop > 12
    assert serve("--server", "gunicorn") == [
        *GUNICORN,
        *["--bind", "127.0.0.1:8000", "--worker-class", "uvicorn_worker.UvicornWorker"],
        *gunicorn_flags(backstop, max(30, backstop)),
        *HOOKS,
    ]


def test_gunicorn_gets_django_graceful_hooks_unless_a_config_of_its_own_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gunicorn reads ./gunicorn.conf.py only when no --config is given: serve leaves it
    that file (README: import the hooks there)."""
    monkeypatch.chdir(tmp_path)
    assert serve("--server", "gunicorn")[-2:] == HOOKS
    (tmp_path / "gunicorn.conf.py").write_text("workers = 2\n")
    argv = serve("--server", "gunicorn")
    assert "--config" not in argv and argv[-1] == str(max(30, serve_backstop()))


def test_gunicorn_native_asgi_worker_binds_host_port_and_runs_n_workers() -> None:
    argv = serve(
        "--server", "gunicorn", "--worker-class", "asgi", "--host", "::1", "--port", "8001",
        "--workers", "3",
    )  # fmt: skip
    graceful = serve_backstop()
    assert argv == [
        *GUNICORN,
        *["--bind", "[::1]:8001", "--worker-class", "asgi"],
        *gunicorn_flags(graceful, max(30, graceful)),
        *["--workers", "3", *HOOKS],
    ]


@pytest.mark.parametrize(
    ("budget", "graceful", "timeout"),
    [(12.5, 15, 30), (3.0, 5, 30), (40.0, 42, 42)],
)
def test_gunicorn_timeouts_follow_the_budget(budget: float, graceful: int, timeout: int) -> None:
    for kind, worker in [("uvicorn", "uvicorn_worker.UvicornWorker"), ("asgi", "asgi")]:
        argv = command_line(
            "gunicorn", "p.asgi:app", host="0.0.0.0", port=80, workers=2, budget=budget,
            worker_class=kind,
        )  # fmt: skip
        assert argv == [
            *[PYTHON, "-m", "gunicorn", "p.asgi:app", "--bind", "0.0.0.0:80"],
            *["--worker-class", worker, *gunicorn_flags(graceful, timeout), "--workers", "2"],
            *HOOKS,
        ]


def test_the_other_servers_command_lines_exactly() -> None:
    def line(server: str, **options: object) -> list[str]:
        kwargs: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 8000,
            "workers": None,
            "budget": 12.5,
        }
        return command_line(server, "p.asgi:app", **{**kwargs, **options})

    assert line("uvicorn", workers=2) == [
        *[PYTHON, "-m", "uvicorn", "p.asgi:app", "--host", "127.0.0.1", "--port", "8000"],
        *["--timeout-graceful-shutdown", "15", "--workers", "2"],
    ]
    assert line("hypercorn") == [
        *[PYTHON, "-m", "hypercorn", "p.asgi:app", "--bind", "127.0.0.1:8000"],
        *["--graceful-timeout", "15", "--workers", "0"],
    ]
    assert line("granian") == [
        *[PYTHON, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1"],
        *["--port", "8000", "--workers-kill-timeout", "15", "p.asgi:app"],
    ]
    assert line("granian", interface="rsgi", workers=2) == [
        *[PYTHON, "-m", "granian", "--interface", "rsgi", "--host", "127.0.0.1"],
        *["--port", "8000", "--workers-kill-timeout", "15", "--workers", "2", "p.asgi:app"],
    ]
    assert line("daphne") == [
        *[PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", "8000"],
        *["--application-close-timeout", "15", "p.asgi:app"],
    ]


@pytest.mark.parametrize(
    ("server", "flags"),
    [
        ("uvicorn", ["--uds", "/run/app.sock"]),
        ("hypercorn", ["--bind", "unix:/run/app.sock"]),
        ("granian", ["--uds", "/run/app.sock"]),
        ("daphne", ["-u", "/run/app.sock"]),
        ("gunicorn", ["--bind", "unix:/run/app.sock"]),
    ],
)
def test_uds_listens_on_a_unix_socket_instead_of_host_and_port(
    server: str, flags: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.path.isdir", lambda path: path == "/run" or Path(path).is_dir())
    line = serve("--server", server, "--uds", "/run/app.sock")
    at = line.index(flags[0])
    assert line[at : at + len(flags)] == flags
    assert not {"--host", "--port", "-b", "-p", "127.0.0.1:8000"} & set(line)


def test_uds_names_what_is_wrong_with_the_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    cases = {
        str(tmp_path / "file"): "exists and is not a socket",
        str(tmp_path / "no" / "app.sock"): "no folder",
        str(tmp_path / ("x" * 120)): "1 to 107 bytes",
    }
    for path, says in cases.items():
        err = StringIO()
        with pytest.raises(CommandError, match=says):
            call_command("serve", "--uds", path, "--print", stderr=err)


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn", "granian", "daphne"])
def test_worker_class_with_another_server_is_a_clear_error(server: str) -> None:
    with pytest.raises(
        CommandError, match=f"--worker-class is gunicorn's: not with --server {server}"
    ):
        serve("--server", server, "--worker-class", "asgi")


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn", "daphne", "gunicorn"])
@pytest.mark.parametrize("interface", ["asgi", "rsgi"])
def test_interface_with_another_server_is_a_clear_error(server: str, interface: str) -> None:
    with pytest.raises(
        CommandError, match=f"^--interface is granian's: not with --server {server}$"
    ):
        serve("--server", server, "--interface", interface)


def test_interface_with_another_server_is_an_error_even_when_it_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The misplaced option is named first: installing the server would not help."""
    not_installed(monkeypatch, "daphne")
    with pytest.raises(CommandError, match=r"^--interface is granian's: not with --server daphne"):
        serve("--server", "daphne", "--interface", "rsgi")


def test_a_missing_gunicorn_or_its_uvicorn_worker_names_the_gunicorn_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = not_installed(monkeypatch, "uvicorn_worker")
    with pytest.raises(CommandError) as error:
        serve("--server", "gunicorn")
    assert str(error.value) == (
        "uvicorn-worker (Gunicorn's Uvicorn worker) is not installed in this environment. "
        "Install it with: pip install 'django-graceful-asgi[gunicorn]'"
    )
    assert serve("--server", "gunicorn", "--worker-class", "asgi")[2] == "gunicorn"
    missing.add("gunicorn")
    with pytest.raises(CommandError, match=r"^gunicorn is not installed in this environment"):
        serve("--server", "gunicorn", "--worker-class", "asgi")
    with pytest.raises(CommandError, match=r"pip install 'django-graceful-asgi\[gunicorn\]'"):
        serve("--server", "gunicorn")


def test_a_missing_server_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    not_installed(monkeypatch, "granian")
    with pytest.raises(CommandError, match=r"pip install 'django-graceful-asgi\[granian\]'"):
        serve("--server", "granian")


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "70000"],
        ["--workers", "0"],
        ["--server", "x"],
        ["--server", "gunicorn", "--worker-class", "gevent"],
        ["--server", "granian", "--interface", "asginl"],
        ["--server", "granian", "--interface", "wsgi"],
    ],
)
def test_bad_arguments_are_refused(args: list[str]) -> None:
    with pytest.raises(CommandError):
        serve(*args)


def test_app_target_notation() -> None:
    assert app_target("proj.asgi.application") == "proj.asgi:application"
    assert app_target("proj.asgi:app") == "proj.asgi:app"
    with pytest.raises(ValueError):
        app_target("application")
    with pytest.raises(ValueError, match="unknown server"):
        command_line("nginx", "p:a", host="h", port=1, workers=None, budget=1)
    with pytest.raises(ValueError, match="unknown gunicorn worker class 'sync'"):
        command_line(
            "gunicorn", "p:a", host="h", port=1, workers=None, budget=1, worker_class="sync"
        )
    with pytest.raises(
        ValueError, match=r"unknown granian interface 'wsgi'; choose from asgi, rsgi"
    ):
        command_line("granian", "p:a", host="h", port=1, workers=None, budget=1, interface="wsgi")
    with pytest.raises(ValueError, match="--interface is granian's: not with --server uvicorn"):
        command_line("uvicorn", "p:a", host="h", port=1, workers=None, budget=1, interface="asgi")


def test_without_asgi_application_the_settings_packages_asgi_module_is_served(
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    """The layout startproject makes: <package>/asgi.py next to <package>/settings.py,
    found without importing it (here: not imported before)."""
    import tests.project

    monkeypatch.delitem(sys.modules, "tests.project.asgi", raising=False)
    monkeypatch.delattr(tests.project, "asgi", raising=False)
    out = StringIO()
    settings.ASGI_APPLICATION = None
    settings.GRACEFUL = {"GRACE_PERIOD": 10}
    call_command("serve", "--print", stdout=out)
    assert "tests.project.asgi:application" in shlex.split(out.getvalue())
    assert "tests.project.asgi" not in sys.modules
