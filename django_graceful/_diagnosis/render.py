"""Plain text for a terminal: printable one-line cells and messages, and tables of cells."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .._core.safetext import visible

#: Longest text shown in a table cell (the JSON has all of it).
CELL_WIDTH = 70


def printable(text: str, width: int = CELL_WIDTH) -> str:
    """One line of at most ``width`` characters, its control and bidi characters escaped
    (``safetext.visible``: a path, a snapshot or a server's output may hold any)."""
    return visible(text, width)


def table(
    headers: Sequence[str],
    lines: Iterable[Sequence[str]],
    widths: Sequence[int] | None = None,
) -> str:
    """A plain-text table (no colours), with a header line: each cell made printable
    and cut at its column's width in ``widths`` (default ``CELL_WIDTH``)."""
    limits = widths if widths is not None else [CELL_WIDTH] * len(headers)
    cells = [
        tuple(printable(cell, limit) for cell, limit in zip(line, limits, strict=True))
        for line in [headers, *lines]
    ]
    columns = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, columns, strict=True)).rstrip()
        for line in cells
    )


def one_line(exc: BaseException) -> str:
    """An error in a note: its type and the first line of its message."""
    text = (str(exc) or "").splitlines()
    return f"{type(exc).__name__}: {visible(text[0], 200)}" if text else type(exc).__name__
