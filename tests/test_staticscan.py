"""``checkshutdown --static`` and the views' system checks (graceful.W003-W006).

The sample is tests/project/views_static.py, reached through its own URLconf
(tests/project/urls_static.py): a ``# bad: LABEL`` comment marks each line to report.
"""

from __future__ import annotations

import importlib
import io
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import Warning, run_checks
from django.core.management import call_command
from django.test import override_settings

from django_graceful._diagnosis.staticscan import scan
from django_graceful._diagnosis.status import CANNOT_CHECK, OK, PROBLEMS

from .project import views_static

BAD = "tests.project.urls_static"
CLEAN = "tests.project.urls_static_clean"
SAMPLE = Path(views_static.__file__)
SAMPLE_NAME = "tests/project/views_static.py"
V = "tests.project.views_static."

#: (id, view, label of the ``# bad:`` line) for every problem in the sample.
EXPECTED = [
    ("graceful.W003", "swallow_named", "swallow-named"),
    ("graceful.W003", "swallow_base", "swallow-base"),
    ("graceful.W003", "swallow_bare", "swallow-bare"),
    ("graceful.W003", "swallow_group", "swallow-group"),
    ("graceful.W003", "swallow_suppress", "swallow-suppress"),
    ("graceful.W003", "swallow_finally", "swallow-finally"),
    ("graceful.W003", "BadDecorated", "class-post"),
    ("graceful.W004", "blocks_sleep", "blocks-sleep"),
    ("graceful.W004", "blocks_sleep", "blocks-nap"),
    ("graceful.W004", "blocks_io", "blocks-requests"),
    ("graceful.W004", "blocks_io", "blocks-urlopen"),
    ("graceful.W004", "blocks_io", "blocks-subprocess"),
    ("graceful.W004", "BadClass", "class-get"),
    ("graceful.W004", "ignored_other_id", "ignored-other-id"),
    ("graceful.W005", "sync_orm", "orm-get"),
    ("graceful.W005", "sync_orm", "orm-comprehension"),
    ("graceful.W005", "sync_orm", "orm-for"),
    ("graceful.W005", "sync_orm", "orm-len"),
    ("graceful.W005", "sync_orm", "orm-queryset-name"),
    ("graceful.W005", "sync_orm", "orm-shortcut"),
    ("graceful.W006", "long_sync", "sync-for"),
    ("graceful.W006", "long_sync_related", "sync-related"),
    ("graceful.W006", "long_sync_cancellable", "sync-sleep"),
    ("graceful.W006", "long_sync_queryset", "sync-queryset"),
    ("graceful.W006", "long_sync_iterator", "sync-iterator"),
    ("graceful.W006", "long_sync_count", "sync-count"),
]
VIEW_IDS = {"graceful.W003", "graceful.W004", "graceful.W005", "graceful.W006"}


def line(label: str) -> int:
    """The line of the sample marked ``# bad: label``."""
    lines = SAMPLE.read_text().splitlines()
    found = [n for n, text in enumerate(lines, 1) if text.rstrip().endswith(f"# bad: {label}")]
    assert len(found) == 1, label
    return found[0]


def expected() -> set[tuple[str, str, int]]:
    return {(check_id, V + view, line(label)) for check_id, view, label in EXPECTED}


def command(*args: str, urlconf: str = BAD) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with override_settings(ROOT_URLCONF=urlconf), pytest.raises(SystemExit) as exit_:
        call_command("checkshutdown", "--static", *args, stdout=out, stderr=err)
    return int(exit_.value.code or 0), out.getvalue(), err.getvalue()


def test_each_bad_pattern_is_found_on_its_line() -> None:
    result = scan(BAD)
    assert result.status == PROBLEMS
    assert {(f.id, f.view, f.line) for f in result.findings} == expected()
    assert all(f.file == str(SAMPLE) for f in result.findings)
    assert not result.notes


def test_clean_views_and_library_views_give_nothing() -> None:
    result = scan(CLEAN)
    assert (result.status, result.findings, result.notes) == (OK, [], [])
    # 16 clean (a lambda too) views of the sample; RedirectView and django_graceful.urls are skipped
    assert result.views == 16
    assert result.reason == "OK: no problems in 16 views"


def test_a_view_under_two_paths_and_class_views_are_one_view_each() -> None:
    result = scan(BAD)
    assert result.views == 34
    names = [f.view for f in result.findings if f.view.endswith("swallow_named")]
    assert names == [V + "swallow_named"]
    by_view = {f.view: f.function for f in result.findings}
    assert by_view[V + "BadClass"] == "BadClass.get"
    assert by_view[V + "BadDecorated"] == "BadDecorated.post"


def test_findings_say_what_why_and_the_fix() -> None:
    findings = {(f.id, f.line): f for f in scan(BAD).findings}
    named = findings[("graceful.W003", line("swallow-named"))]
    assert named.what == "`except CancelledError` with no raise swallows the cancellation"
    assert "runs on after a disconnect or a shutdown" in named.message
    assert "Re-raise CancelledError" in named.hint
    group = findings[("graceful.W003", line("swallow-group"))]
    assert group.what == "`except* asyncio.CancelledError` with no raise swallows the cancellation"
    assert "asyncio.sleep" in findings[("graceful.W004", line("blocks-nap"))].hint
    assert "httpx.AsyncClient" in findings[("graceful.W004", line("blocks-requests"))].hint
    assert "aget" in findings[("graceful.W005", line("orm-get"))].hint
    assert "aget_object_or_404" in findings[("graceful.W005", line("orm-shortcut"))].hint
    unchecked = findings[("graceful.W006", line("sync-for"))]
    assert unchecked.what == (
        "`for` loop over `range(int(request.GET.get('rows', '10...`, no cancellation check"
    )
    assert "raise_if_cancelled()" in unchecked.hint


def test_command_prints_a_table_then_the_reason() -> None:
    status, out, err = command()
    assert status == PROBLEMS and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "VIEW", "LOCATION", "FINDING"]
    assert lines[-1] == (
        "26 problems in 18 of 34 views: 7 swallowed-cancel, 7 blocking-call, 6 sync-orm, "
        "6 unchecked-sync"
    )
    rows = lines[1 : 1 + len(EXPECTED)]
    assert [row.split()[0] for row in rows] == sorted(check_id for check_id, _, _ in EXPECTED)
    location = f"{SAMPLE_NAME}:{line('swallow-named')}"
    assert any(row.split()[1:3] == [V + "swallow_named", location] for row in rows)
    # columns are aligned: every row's location starts under the header's
    start = lines[0].index("LOCATION")
    assert all(row[start:].startswith(SAMPLE_NAME) for row in rows)
    assert "graceful.W006 unchecked-sync: a sync view cannot be interrupted" in out
    assert "  fix: Call request.cancellation.raise_if_cancelled()" in out


def test_command_on_clean_views_exits_0() -> None:
    assert command(urlconf=CLEAN) == (OK, "OK: no problems in 16 views\n", "")


def test_command_json() -> None:
    status, out, _ = command("--json")
    data = json.loads(out)
    assert status == data["status"] == PROBLEMS
    assert data["reason"].startswith("26 problems in 18 of 34 views")
    assert data["notes"] == []
    assert len(data["findings"]) == len(EXPECTED)
    first = data["findings"][0]
    assert set(first) == {"id", "view", "file", "line", "function", "kind", "message", "hint"}
    assert set(data) == {"status", "reason", "urlconf", "views", "silenced", "findings", "notes"}
    assert (first["id"], first["kind"], first["file"]) == (
        "graceful.W003",
        "swallowed-cancel",
        str(SAMPLE),
    )


def test_an_urlconf_that_does_not_import_cannot_be_checked() -> None:
    status, out, _ = command(urlconf="tests.project.no_such_urls")
    assert status == CANNOT_CHECK
    assert out.splitlines() == [
        "cannot check: the URLconf 'tests.project.no_such_urls' cannot be loaded: "
        "ModuleNotFoundError: No module named 'tests.project.no_such_urls'"
    ]
    status, out, _ = command("--json", urlconf="tests.project.no_such_urls")
    assert (status, json.loads(out)["findings"]) == (CANNOT_CHECK, [])


def write_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Any:
    """A package ``name`` in ``tmp_path`` with views (one bad) and an URLconf, imported."""
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "views.py").write_text(
        textwrap.dedent(
            """
            import time

            async def sleepy(request):
                time.sleep(1)
            """
        )
    )
    (package / "other.py").write_text("async def fine(request):\n    return None\n")
    (package / "urls.py").write_text(
        textwrap.dedent(
            """
            from django.urls import path
            from . import other, views

            urlpatterns = [path("a/", views.sleepy), path("b/", other.fine)]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    for module in ("urls", "views", "other"):
        monkeypatch.delitem(sys.modules, f"{name}.{module}", raising=False)
    return importlib.import_module(f"{name}.urls")


def test_a_view_whose_source_cannot_be_read_is_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = write_project(tmp_path, monkeypatch, "staticscan_unreadable")
    assert scan(urls).findings[0].id == "graceful.W004"
    (tmp_path / "staticscan_unreadable" / "views.py").write_text("def broken(:\n")
    result = scan(urls)
    assert (result.status, result.findings, result.views) == (OK, [], 1)
    assert result.reason == "OK: no problems in 1 view (1 could not be read)"
    [note] = result.notes
    assert note.startswith("cannot read ") and "views.py: SyntaxError: " in note
    (tmp_path / "staticscan_unreadable" / "views.py").unlink()
    (tmp_path / "staticscan_unreadable" / "other.py").unlink()
    result = scan(urls)
    assert result.status == CANNOT_CHECK
    assert result.reason == "cannot check: no view's source could be read (2 views)"
    assert len(result.notes) == 2


def test_the_command_shows_notes_on_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(tmp_path, monkeypatch, "staticscan_notes")
    (tmp_path / "staticscan_notes" / "views.py").write_text("def broken(:\n")
    status, out, err = command(urlconf="staticscan_notes.urls")
    assert status == OK
    assert out == "OK: no problems in 1 view (1 could not be read)\n"
    assert err.startswith("cannot read ") and "SyntaxError" in err
    assert "Traceback" not in err


def view_warnings(urlconf: str, **settings: Any) -> list[Any]:
    with override_settings(ROOT_URLCONF=urlconf, **settings):
        return [m for m in run_checks() if m.id in VIEW_IDS]


def test_system_checks_warn_about_the_same_findings_with_a_hint() -> None:
    messages = view_warnings(BAD)
    assert {(m.id, m.obj, int(m.msg.split(":")[1])) for m in messages} == expected()
    assert all(isinstance(m, Warning) and m.hint for m in messages)
    named = next(m for m in messages if m.obj == V + "swallow_named")
    assert named.msg == (
        f"{SAMPLE_NAME}:{line('swallow-named')}: `except CancelledError` with no raise "
        "swallows the cancellation; the view runs on after a disconnect or a shutdown, "
        "past the grace period."
    )
    assert str(named).startswith(f"{V}swallow_named: (graceful.W003) {SAMPLE_NAME}:")
    assert view_warnings(CLEAN) == []


def test_silenced_checks_disappear(settings: Any) -> None:
    silenced = ["graceful.W004", "graceful.W005"]
    settings.ROOT_URLCONF = BAD
    settings.SILENCED_SYSTEM_CHECKS = silenced
    out, err = io.StringIO(), io.StringIO()
    call_command("check", stdout=out, stderr=err)
    assert "graceful.W003" in err.getvalue() and "graceful.W006" in err.getvalue()
    assert "graceful.W004" not in err.getvalue() and "graceful.W005" not in err.getvalue()
    assert "(13 silenced)" in err.getvalue()


def test_the_command_leaves_silenced_checks_out_too(settings: Any) -> None:
    settings.SILENCED_SYSTEM_CHECKS = ["graceful.W004", "graceful.W005"]
    status, out, _ = command()
    assert status == PROBLEMS
    assert "graceful.W004" not in out and "graceful.W005" not in out
    assert out.splitlines()[-1] == (
        "13 problems in 13 of 34 views: 7 swallowed-cancel, 6 unchecked-sync (13 silenced)"
    )
    everything = ["graceful.W003", "graceful.W004", "graceful.W005", "graceful.W006"]
    settings.SILENCED_SYSTEM_CHECKS = everything
    status, out, _ = command("--json")
    data = json.loads(out)
    assert (status, data["findings"], data["silenced"]) == (OK, [], 26)
    assert data["reason"] == "OK: no problems in 34 views (26 silenced)"


def test_system_checks_never_break_manage_py_check(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    from django_graceful._diagnosis import staticscan

    def broken(urlconf: Any = None) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(staticscan, "scan", broken)
    settings.ROOT_URLCONF = CLEAN
    messages = [m for m in run_checks() if m.id == "graceful.I001"]
    assert [m.msg for m in messages] == [
        "The views were not scanned for shutdown problems: RuntimeError: a bug"
    ]


def test_system_checks_of_some_apps_only_look_at_their_views(settings: Any) -> None:
    from django.apps import apps

    settings.ROOT_URLCONF = BAD
    mine = run_checks(app_configs=[apps.get_app_config("testproject")])
    theirs = run_checks(app_configs=[apps.get_app_config("auth")])
    assert {m.id for m in mine} >= VIEW_IDS
    assert not {m.id for m in theirs} & VIEW_IDS


def test_the_test_projects_deliberately_hanging_views_are_flagged() -> None:
    result = scan("tests.project.urls")
    found = {(f.id, f.view) for f in result.findings}
    assert found == {
        ("graceful.W003", "tests.project.views.stubborn"),
        ("graceful.W003", "tests.project.views_hangs.swallower"),
        ("graceful.W004", "tests.project.views_hangs.frozen"),
        ("graceful.W006", "tests.project.views_hangs.busy"),
    }


def test_the_scan_is_quick() -> None:
    began = time.perf_counter()
    scan(BAD)
    scan("tests.project.urls")
    assert time.perf_counter() - began < 1.0
