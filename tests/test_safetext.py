"""What we write shows control and bidi characters as escapes: logs, tables, JSON, echoes."""

from __future__ import annotations

import io
import json
import time
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from django_graceful._core.safetext import dumps, visible
from django_graceful._diagnosis.drill.model import Drill
from django_graceful._diagnosis.drill.render import show
from django_graceful._diagnosis.render import printable

from .test_report import folder_with, snapshot

#: What an attacker puts in a path or a server line: colour, a forged line, C1 CSI,
#: a right-to-left override, a lone surrogate (an undecodable byte).
HOSTILE = "/x\x1b[31mRED\r\nWARNING forged\x9b2J\u202eevil\udcff/"


def assert_safe(text: str) -> None:
    unsafe = [ch for ch in text if not ch.isprintable() and ch != "\n"]
    assert unsafe == [], [unicodedata.name(ch, hex(ord(ch))) for ch in unsafe]


def test_control_and_bidi_characters_are_shown_as_their_escapes() -> None:
    assert visible(HOSTILE) == ("/x\\x1b[31mRED\\r\\nWARNING forged\\x9b2J\\u202eevil\\udcff/")
    assert visible("\x00\x7f\u2028\U000e0001") == "\\x00\\x7f\\u2028\\U000e0001"


def test_printable_text_is_left_as_it_is_also_when_escaped_twice() -> None:
    assert visible("/café/東京/ a\\x1b") == "/café/東京/ a\\x1b"
    assert visible(visible(HOSTILE)) == visible(HOSTILE)
    assert visible(visible(HOSTILE, 20), 20) == visible(HOSTILE, 20)


@pytest.mark.parametrize("limit", range(1, 30))
def test_a_cut_keeps_within_the_limit_and_never_halves_an_escape(limit: int) -> None:
    shown = visible("ab\x1bcd\u202eef" * 3, limit)
    assert len(shown) <= limit and shown.endswith("…")
    assert shown[:-1] in visible("ab\x1bcd\u202eef" * 3)
    escapes = shown[:-1].replace("\\x1b", "").replace("\\u202e", "")
    assert "\\" not in escapes
    assert visible("abc", 3) == "abc" and visible("abcd", 3) == "ab…"


def test_json_escapes_them_and_reads_back_the_same_value() -> None:
    value = {"what": HOSTILE, "host": "h\u0085\u2066", "note": "café", "n": [1, None]}
    text = dumps(value, indent=2)
    assert_safe(text)
    assert "\\u001b" in text and "\\u009b" in text and "\\u202e" in text
    assert "café" in text  # readable text stays readable
    assert json.loads(text) == value


def test_checkshutdown_json_prints_no_control_character(tmp_path: Path, settings: Any) -> None:
    """A snapshot may hold anything (written by another version, or read from a host
    name): the JSON for machines is valid, shows the escapes, and means the same."""
    work = [("request", f"GET {HOSTILE}", "app.views.x", 60_000)]
    folder_with(tmp_path, snapshot(work, time=time.time(), host="web\u202e1"))
    out, err = io.StringIO(), io.StringIO()
    settings.GRACEFUL = {"STATE_DIR": str(tmp_path / "state")}
    with pytest.raises(SystemExit):
        call_command("checkshutdown", "--json", stdout=out, stderr=err)
    assert_safe(out.getvalue())
    data = json.loads(out.getvalue())
    (row,) = data["rows"]
    assert row["what"] == f"GET {HOSTILE}" and row["host"] == "web\u202e1"


def test_checkshutdowns_table_shows_the_escapes(tmp_path: Path, settings: Any) -> None:
    work = [("request", "GET /\x1b[2J\u202e", None, 60_000)]
    folder_with(tmp_path, snapshot(work, time=time.time()))
    out, err = io.StringIO(), io.StringIO()
    settings.GRACEFUL = {"STATE_DIR": str(tmp_path / "state")}
    with pytest.raises(SystemExit):
        call_command("checkshutdown", stdout=out, stderr=err)
    assert_safe(out.getvalue())
    assert "GET /\\x1b[2J\\u202e" in out.getvalue()
    assert printable("a\nb") == "a\\nb"  # a cell is one line


def test_the_drill_echoes_the_servers_lines_with_their_escapes() -> None:
    drill = Drill(reason="1 problem", log=[f"WARNING hung at shutdown: request GET {HOSTILE}"])
    out, err = io.StringIO(), io.StringIO()
    show(drill, False, out, err)
    assert_safe(err.getvalue())
    assert f"server: WARNING hung at shutdown: request GET {visible(HOSTILE)}" in err.getvalue()
    out = io.StringIO()
    show(drill, True, out, err)
    assert_safe(out.getvalue())
    assert json.loads(out.getvalue())["log"] == drill.log
