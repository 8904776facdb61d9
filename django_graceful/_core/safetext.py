"""Text safe to write to a log or a terminal: control and bidi characters made visible.

A request path, a thread's name or a server's output line may hold any character: an
ESC that recolours a terminal, a newline that forges a log line, a U+202E that turns
the rest of a line around. What we write shows such a character as its escape
instead (``\\x1b``, ``\\n``, ``\\u202e``), which a reader sees and a terminal does not
act on. One rule decides which characters: those ``str.isprintable()`` rejects
(controls, format characters such as the bidi overrides, line and paragraph
separators, lone surrogates; the space is kept). A backslash is left as it is, so
that escaping escaped text changes nothing: a label escaped where it is made may be
escaped again where it is printed.

``visible()`` is that rule for text; ``dumps()`` for JSON, whose escapes (``\\u001b``,
``\\u202e``) keep the document valid and read back to the very same value.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: The marker at the end of text that was cut.
ELLIPSIS = "…"

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: Characters a JSON document may hold raw (its own whitespace between values).
_JSON_WHITESPACE = frozenset("\n\r\t")


def escape_char(ch: str) -> str:
    """The visible form of one character ``visible()`` escapes."""
    short = _SHORT.get(ch)
    if short is not None:
        return short
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text: str, limit: int | None = None) -> str:
    """``text`` with every character that is not printable escaped (see the module's
    docstring), cut to at most ``limit`` characters with ``…`` at the end if given.

    An escape is never cut in half; escaping the result again changes nothing.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be 1 or more, not {limit}")
    if text.isprintable():
        if limit is None or len(text) <= limit:
            return text
        return text[: limit - 1] + ELLIPSIS
    # Escape no more than can be shown: a long text is cut before it is escaped.
    source = text if limit is None else text[:limit]
    parts: list[str] = []
    size = 0
    for ch in source:
        part = ch if ch.isprintable() else escape_char(ch)
        parts.append(part)
        size += len(part)
    if limit is None or (size <= limit and len(text) <= limit):
        return "".join(parts)
    # Keep whole parts while they and the marker fit.
    kept, size = [], 0
    for part in parts:
        if size + len(part) > limit - 1:
            break
        kept.append(part)
        size += len(part)
    return "".join(kept) + ELLIPSIS


_JSON_UNSAFE = re.compile(r"[^\n\r\t\x20-\x7e]")


def _json_escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch.isprintable() or ch in _JSON_WHITESPACE:
        return ch
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON spells a character past U+FFFF
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def dumps(value: Any, **options: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, **options)`` with every character that is
    not printable written as a JSON escape: valid JSON that reads back to ``value``,
    readable (other non-ASCII text stays as it is) and safe on a terminal."""
    text = json.dumps(value, ensure_ascii=False, **options)
    # json.dumps escapes the C0 controls inside strings already, so a raw newline, tab
    # or carriage return is the document's own whitespace; any other character that is
    # not printable can only sit inside a string.
    return _JSON_UNSAFE.sub(_json_escape, text)
