"""``checkshutdown --drill``: the example project on real servers, SIGTERM, and the verdict."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_graceful._core.phases import EXIT_SLACK
from django_graceful._diagnosis import drill
from django_graceful._diagnosis.drill import rehearsal, render
from django_graceful._diagnosis.drill.output import noteworthy

from .markers import marked
from .servers import DELIVERY_SERVERS, ROOT, SERVERS, example_env, not_installed
from .test_report import dead_pid, last_report, snapshot

server = pytest.mark.server

VIEWS = ROOT / "example_project" / "views.py"
VIEWS_HANGS = ROOT / "tests" / "project" / "views_hangs.py"
STUBBORN = "example_project.views.stubborn (GET /stubborn/)"
MARKER = "# the drill's report points here"
#: Seconds a drill may take here: start (~1 s), the grace and cancel (1 s each), exit.
DRILL_TIMEOUT = 60
#: Each server the drill is run on (named as in ``tests/servers.py``): its checkshutdown
#: flags and the name its lines use.
DRILLED = {
    **{name: (["--server", name], name) for name in ("uvicorn", "hypercorn", "daphne")},
    "granian": (["--server", "granian"], "granian (asgi interface)"),
    "granian-rsgi": (["--server", "granian", "--interface", "rsgi"], "granian (rsgi interface)"),
    "gunicorn-uvicorn": (
        ["--server", "gunicorn", "--worker-class", "uvicorn"],
        "gunicorn (uvicorn worker)",
    ),
    "gunicorn-asgi": (["--server", "gunicorn", "--worker-class", "asgi"], "gunicorn (asgi worker)"),
}


def example_drill(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python manage.py checkshutdown --drill ARGS`` on the example project, as CI runs it
    (a 1 s grace and a 1 s cancel timeout; its own database and state folder)."""
    return subprocess.run(
        [sys.executable, "manage.py", "checkshutdown", "--drill", *args],
        cwd=ROOT,
        env=example_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=DRILL_TIMEOUT,
    )


def others_state(tmp_path: Path) -> dict[str, str]:
    """A state folder that already holds other processes' documents: an old last report
    listing a hang, and a dead worker's live snapshot. The drill must neither report nor
    remove them."""
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    pid = dead_pid()
    documents = {
        f"last-elsewhere-{pid}.json": json.dumps(last_report(pid)),
        f"live-elsewhere-{pid + 1}.json": json.dumps(snapshot(pid=pid + 1, time=time.time())),
    }
    for name, text in documents.items():
        (folder / name).write_text(text)
    return documents


def assert_only_others_left(tmp_path: Path, documents: dict[str, str]) -> None:
    left = {path.name: path.read_text() for path in (tmp_path / "state").iterdir()}
    assert left == documents  # the drill's own reports are gone; nobody else's


def test_every_test_server_is_drilled() -> None:
    assert set(SERVERS) <= set(DRILLED)


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.splitlines()[-1]


@server
@pytest.mark.parametrize("drilled", DELIVERY_SERVERS)
def test_a_view_that_swallows_the_cancel_fails_the_drill(drilled: str, tmp_path: Path) -> None:
    """The verdict is read from the drilled worker's last report, whatever the server (that
    each server is drilled is the next test's; that each reports a view swallowing its
    cancel, its driver's tests')."""
    flags, name = DRILLED[drilled]
    documents = others_state(tmp_path)
    began = time.monotonic()
    result = example_drill(tmp_path, *flags, "--url", "/stubborn/")
    took = time.monotonic() - began

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    rows = [line for line in result.stdout.splitlines() if STUBBORN in line]
    assert len(rows) == 1, output  # the drill's worker, not the old report of another
    (row,) = rows
    assert " last " in row and "swallowed-cancel" in row and "cancelled " in row
    assert row.rstrip().endswith(f"{marked(VIEWS, MARKER)} in stubborn"), row
    assert last_line(result).startswith("1 problem: 1 swallowed-cancel"), output
    assert f"({name} exited " in last_line(result)
    assert f"drill: {name}, pid " in result.stdout
    # what the server logged about it, on stderr
    assert "hung at shutdown: request GET /stubborn/" in result.stderr, output
    assert_only_others_left(tmp_path, documents)
    assert took < DRILL_TIMEOUT / 2, took


@server
@pytest.mark.parametrize("drilled", DRILLED)
def test_a_view_that_stops_when_cancelled_passes_the_drill(drilled: str, tmp_path: Path) -> None:
    """/slow/ sleeps 5 s: the 1 s grace ends, it is cancelled, runs its cleanup, the client
    gets a 503 and the server exits well within the budget."""
    flags, name = DRILLED[drilled]
    documents = others_state(tmp_path)
    result = example_drill(tmp_path, *flags, "--url", "/slow/", "--concurrency", "2")

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert last_line(result).startswith(f"OK: nothing hung ({name} exited "), output
    assert "HOST" not in result.stdout  # no table: nothing to list
    (line,) = [line for line in result.stdout.splitlines() if "GET /slow/" in line]
    assert "2x 503" in line, output
    assert "SIGTERM with 2 of 2 requests in flight" in result.stdout, output
    assert_only_others_left(tmp_path, documents)


@server
def test_json_carries_the_verdict_the_exit_and_the_rows(tmp_path: Path) -> None:
    result = example_drill(
        tmp_path,
        "--json",
        "--url",
        "/stubborn/",
        "--url",
        "/slow/?seconds=30",
        "--concurrency",
        "2",
        "--wait",
        "0.3",
    )

    assert result.returncode == 1, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == 1 and data["reason"].startswith("2 problems: 2 swallowed-cancel")
    assert data["server"] == "uvicorn" and data["host"].startswith("drill-")
    assert data["command"][1:3] == ["-m", "uvicorn"]
    assert data["problems"] == ["2 swallowed-cancel"]
    budget = data["budget"]
    assert budget > 2  # grace 1 + cancel 1 + the example's hooks
    assert 0 < data["exit"]["after"] < budget + 1 and data["exit"]["within_budget"] is True
    assert data["exit"]["killed"] is False and data["exit"]["watchdog"] is False
    assert data["signal_after"] >= 0.3 and data["in_flight_at_signal"] == 4
    requests = {r["url"]: r for r in data["requests"]}
    assert set(requests) == {"/stubborn/", "/slow/?seconds=30"}
    assert requests["/slow/?seconds=30"]["summary"] == "2x 503"
    assert all(o["ended_after_signal"] > 0 for o in requests["/slow/?seconds=30"]["outcomes"])
    rows = data["rows"]
    assert len(rows) == 2
    for row in rows:
        assert (row["view"], row["what"], row["kind"]) == (
            "example_project.views.stubborn",
            "GET /stubborn/",
            "request",
        )
        assert (row["hang"], row["source"], row["host"]) == (
            "swallowed-cancel",
            "last",
            data["host"],
        )
        assert row["location"].endswith(" in stubborn") and row["cancelled"] >= 1
    assert [w["pid"] for w in data["workers"]] == [data["pid"]]
    assert any("hung at shutdown" in line for line in data["log"])


@server
@pytest.mark.parametrize("kind", ["uvicorn", "asgi"])
def test_gunicorn_is_drilled_as_master_and_worker(kind: str, tmp_path: Path) -> None:
    """SIGTERM goes to Gunicorn's master (the process the drill started); the report is its
    worker's, a process of its own; nothing of the group outlives the master."""
    result = example_drill(
        tmp_path, "--server", "gunicorn", "--worker-class", kind, "--url", "/slow/", "--json"
    )

    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert (data["server"], data["worker_class"]) == ("gunicorn", kind)
    command = data["command"]
    assert command[1:3] == ["-m", "gunicorn"]
    worker = {"uvicorn": "uvicorn_worker.UvicornWorker", "asgi": "asgi"}[kind]
    assert command[command.index("--worker-class") + 1] == worker
    assert int(command[command.index("--graceful-timeout") + 1]) > data["budget"]
    assert data["requests"][0]["summary"] == "1x 503"
    (pid,) = [w["pid"] for w in data["workers"]]
    assert pid != data["pid"]  # the worker, not the master
    assert data["exit"]["within_budget"] is True and data["exit"]["leftover_processes"] == 0


TEST_PROJECT_SETTINGS = """
from tests.project.settings import *  # noqa: F403
ASGI_APPLICATION = {app!r}
GRACEFUL["STATE_DIR"] = {state!r}
"""


def drill_of_the_test_project(
    tmp_path: Path, app: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """A drill of the test project (its hanging views), served by ``app``; a short budget."""
    (tmp_path / "drill_settings.py").write_text(
        TEST_PROJECT_SETTINGS.format(app=app, state=str(tmp_path / "state"))
    )
    graceful = {"GRACE_PERIOD": 0.5, "CANCEL_TIMEOUT": 0.5, "HOOK_TIMEOUT": 0.5}
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "drill_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "GRACEFUL_TEST_SETTINGS": json.dumps(graceful),
        "GRACEFUL_TEST_EVENTS": str(tmp_path / "events.jsonl"),
        "TEST_DB": str(tmp_path / "db.sqlite3"),
    }
    return subprocess.run(
        [sys.executable, "-m", "django", "checkshutdown", "--drill", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DRILL_TIMEOUT,
    )


PLAIN = "tests.project.asgi_plain.application"  # forgot GracefulASGI
WRAPPED = "tests.project.asgi.application"


@server
def test_without_graceful_asgi_a_quick_drill_cannot_check(tmp_path: Path) -> None:
    result = drill_of_the_test_project(tmp_path, PLAIN, "--url", "/pid/")
    assert result.returncode == 2, result.stdout + result.stderr
    assert last_line(result).startswith("cannot check: the server published no state"), (
        result.stdout
    )
    assert "GracefulASGI" in last_line(result)
    assert "1x 200" in result.stdout


@server
def test_without_graceful_asgi_a_hang_is_still_seen_in_the_exit_time(tmp_path: Path) -> None:
    """Plain Django on Uvicorn waits for the stubborn view until its own backstop, past
    the budget: the drill fails on the exit time alone."""
    result = drill_of_the_test_project(tmp_path, PLAIN, "--url", "/stubborn/")
    assert result.returncode == 1, result.stdout + result.stderr
    assert last_line(result).startswith("1 problem: exited past the budget"), result.stdout
    assert "published no state" in result.stderr


@server
def test_hooks_only_the_server_registers_count_in_the_budget(tmp_path: Path) -> None:
    late = "tests.project.asgi_late_hook.application"
    result = drill_of_the_test_project(tmp_path, late, "--url", "/pid/", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    (note,) = [n for n in data["notes"] if n.startswith("the server's shutdown budget is")]
    server_budget, counted = map(float, re.findall(r"(\d+\.\d) s", note))
    assert server_budget - counted == pytest.approx(4.0)  # flush_late's timeout
    assert data["budget"] == pytest.approx(server_budget, abs=0.05)


@server
def test_a_server_that_will_not_exit_is_killed_and_its_last_snapshot_read(
    tmp_path: Path,
) -> None:
    """A view that blocks the event loop for 30 s: SIGTERM cannot even be seen. The drill
    kills the process group past the budget, and reads the worker's last live snapshot."""
    began = time.monotonic()
    result = drill_of_the_test_project(tmp_path, WRAPPED, "--url", "/hangs/frozen/?s=30", "--json")
    took = time.monotonic() - began

    assert result.returncode == 1, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["exit"]["killed"] is True and data["exit"]["within_budget"] is False
    assert data["exit"]["code"] == -9
    assert data["exit"]["after"] >= data["budget"] + EXIT_SLACK + rehearsal.KILL_MARGIN
    (row,) = data["rows"]
    assert (row["view"], row["hang"], row["source"]) == (
        "tests.project.views_hangs.frozen",
        "blocked-loop",
        "died",
    )
    assert row["location"] == f"{marked(VIEWS_HANGS, '# hang: frozen-sleep')} in frozen"
    pid = data["pid"]
    assert data["problems"] == [
        "1 blocked-loop",
        f"worker {pid} ended without a shutdown report",
        "did not exit",
    ]
    assert data["reason"].startswith("3 problems: ") and "killed" in data["reason"]
    assert took < 30  # not the view's 30 s: the budget, the margin, and no more
    assert list((tmp_path / "state").iterdir()) == []


# -- in-process: input and the parts ---------------------------------------------------


def run_drill(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("checkshutdown", "--drill", *args, stdout=out, stderr=err)
    return int(exited.value.code or 0), out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("nope", "a path must start with '/'"),
        ("/a b/", "without spaces"),
        ("/a/#top", "'#'"),
    ],
)
def test_a_bad_url_is_refused_in_one_line(url: str, why: str) -> None:
    status, out, _ = run_drill("--url", "/ok/", "--url", url)
    assert status == 2
    (line,) = out.splitlines()
    assert line.startswith(f"cannot drill: --url {url!r}: ") and why in line

    status, out, _ = run_drill("--url", url, "--json")
    data = json.loads(out)
    assert status == 2 and data["status"] == 2 and data["reason"] == line


@pytest.mark.parametrize(
    "option",
    [
        ["--server", "daphne"],
        ["--worker-class", "asgi"],
        ["--interface", "rsgi"],
        ["--url", "/"],
        ["--wait", "1"],
    ],
)
def test_drill_options_need_drill(option: list[str]) -> None:
    with pytest.raises(CommandError, match=f"{option[0]} needs --drill"):
        call_command("checkshutdown", *option, stdout=io.StringIO(), stderr=io.StringIO())


@pytest.mark.parametrize("mode", ["--drill", "--static"])
@pytest.mark.parametrize("option", [["--pid", "1"], ["--threshold", "5"]])
def test_report_options_are_refused_with_another_mode(mode: str, option: list[str]) -> None:
    with pytest.raises(CommandError, match=f"{option[0]} reads the workers' reports: not with"):
        call_command("checkshutdown", mode, *option, stdout=io.StringIO(), stderr=io.StringIO())


def test_a_missing_server_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    not_installed(monkeypatch, "daphne")
    settings.ASGI_APPLICATION = "tests.project.asgi.application"
    status, out, _ = run_drill("--server", "daphne")
    assert status == 2
    assert out.strip() == (
        "cannot drill: daphne is not installed in this environment. "
        "Install it with: pip install 'django-graceful-asgi[daphne]'"
    )


@pytest.mark.parametrize(
    ("option", "owner", "server"),
    [
        pytest.param(["--worker-class", "asgi"], "gunicorn", "uvicorn", id="worker-class-uvicorn"),
        pytest.param(["--worker-class", "asgi"], "gunicorn", "daphne", id="worker-class-daphne"),
        pytest.param(["--interface", "rsgi"], "granian", "uvicorn", id="interface-uvicorn"),
        pytest.param(["--interface", "rsgi"], "granian", "gunicorn", id="interface-gunicorn"),
    ],
)
def test_an_option_of_one_server_is_refused_with_another(
    option: list[str], owner: str, server: str, settings: Any
) -> None:
    settings.ASGI_APPLICATION = "tests.project.asgi.application"
    status, out, _ = run_drill("--server", server, *option)
    assert status == 2
    assert out.strip() == f"cannot drill: {option[0]} is {owner}'s: not with --server {server}"


@pytest.mark.parametrize(("args", "interface"), [([], "asgi"), (["--interface", "rsgi"], "rsgi")])
def test_the_json_names_granians_interface(
    args: list[str], interface: str, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """ASGI unless ``--interface rsgi`` (here Granian is "missing": the drill stops at its
    command line, with the interface already known)."""
    not_installed(monkeypatch, "granian")
    settings.ASGI_APPLICATION = "tests.project.asgi.application"
    status, out, _ = run_drill("--server", "granian", *args, "--json")
    data = json.loads(out)
    assert status == 2 and (data["server"], data["interface"]) == ("granian", interface)
    assert data["worker_class"] is None
    assert data["reason"].startswith("cannot drill: granian is not installed")


def test_gunicorn_without_its_uvicorn_worker_names_the_gunicorn_extra(
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    not_installed(monkeypatch, "uvicorn_worker")
    settings.ASGI_APPLICATION = "tests.project.asgi.application"
    status, out, _ = run_drill("--server", "gunicorn", "--json")
    data = json.loads(out)
    assert status == 2 and (data["server"], data["worker_class"]) == ("gunicorn", "uvicorn")
    assert data["interface"] is None
    assert data["reason"] == (
        "cannot drill: uvicorn-worker (Gunicorn's Uvicorn worker) is not installed in this "
        "environment. Install it with: pip install 'django-graceful-asgi[gunicorn]'"
    )


def test_no_asgi_application_cannot_drill(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "nowhere.settings")
    settings.ASGI_APPLICATION = None
    status, out, _ = run_drill()
    assert status == 2 and out.strip().startswith("cannot drill: set ASGI_APPLICATION")


def test_a_process_local_state_cache_cannot_be_read(settings: Any) -> None:
    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.CACHES = caches
    settings.GRACEFUL = {"STATE_BACKEND": "cache"}
    status, out, _ = run_drill()
    assert status == 2
    assert "LocMemCache, private to each process" in out and "graceful.W002" in out


def test_the_clients_outcomes_in_a_line() -> None:
    outcomes = [
        drill.Answer("/", status=503),
        drill.Answer("/", status=200),
        drill.Answer("/", status=503),
        drill.Answer("/", error="closed without a response"),
        drill.Answer("/", status=200, error="closed mid-body"),
    ]
    assert drill.summary(outcomes) == (
        "2x 503, 1x 200, 1x closed without a response, 1x 200 closed mid-body"
    )
    assert render.when([1.04, 1.01]) == "  (ended 1.0 s after SIGTERM)"
    assert render.when([-0.52, -0.5]) == "  (ended 0.5 s before SIGTERM)"
    assert render.when([-0.5, 2.0]) == "  (ended 0.5 s before to 2.0 s after SIGTERM)"
    assert (
        render.exit_status(-15) == "ended by SIGTERM" and render.exit_status(1) == "exit status 1"
    )


def test_the_servers_lines_about_hangs_are_kept_once_each() -> None:
    output = "\n".join(
        [
            "INFO uvicorn: started",
            "12:00:01,100 WARNING app: cancel swallowed",
            "12:00:01,350 WARNING app: cancel swallowed",
            "12:00:02,000 WARNING django_graceful: hung at shutdown: request GET /x/ (1.0 s old)",
            "  File 'views.py', line 3, in x",
            "WARNING django.request: Not Found: /__django_graceful_drill__/",
            "process still alive 11.0 s after the shutdown signal",
        ]
    )
    assert noteworthy(output) == [
        "12:00:01,100 WARNING app: cancel swallowed  (and 1 more like it)",
        "12:00:02,000 WARNING django_graceful: hung at shutdown: request GET /x/ (1.0 s old)",
        "process still alive 11.0 s after the shutdown signal",
    ]
