"""``checkshutdown --static``: the URLconf's views, read as source, for code that will not stop.

Every view the URLconf reaches (through its includes and namespaces; decorators and
``method_decorator`` unwrapped; a class-based view's handler methods) is parsed once
with :mod:`ast` and never run. Library code is skipped (site-packages, the standard
library, Django, django_graceful), so the admin says nothing. Only a view's own body is
read, not the functions it calls. Findings, most severe kind first:

- ``graceful.W003`` swallowed cancellation: in an async view, ``except CancelledError``,
  ``except BaseException``, a bare ``except:`` (or ``contextlib.suppress`` of one) around
  an ``await``, with no ``raise`` in the handler; a ``return`` in the ``finally`` of a
  ``try`` that awaits. ``except Exception`` is fine;
- ``graceful.W004`` a blocking call in an async view (``time.sleep``, ``requests.get``,
  ``urllib.request.urlopen``, ``subprocess.run``, ``send_mail``, …: :data:`.names.BLOCKING_CALLS`,
  resolved through the module's imports). A nested sync function or a lambda runs
  elsewhere (``sync_to_async``, ``asyncio.to_thread``) and is not read;
- ``graceful.W005`` the sync ORM in an async view: ``X.objects.get()`` and the other
  evaluating methods (:data:`.names.ORM_EVALUATING`), a ``for`` loop, a comprehension or
  ``list()`` over ``X.objects…`` or over a name only ever bound to a lazy queryset,
  ``get_object_or_404``. Not ``await X.objects.aget()``, ``async for``, lazy
  ``qs = X.objects.filter()``, nor anything handed to ``sync_to_async``;
- ``graceful.W006`` a sync view that can run long (a ``while`` loop, ``time.sleep``, a
  ``for`` loop over an unsliced queryset, ``range()`` past 1000 or with a computed
  bound, ``itertools.count``, a file; not over a slice, a dict, a list or the request's
  data: ordinary views stay quiet) and never looks at its cancellation (no
  ``cancellation``, ``current_cancellation``, ``raise_if_cancelled``, ``cancelled`` or
  ``is_shutting_down`` in its body). ``@cancellable`` does not change that: it cannot
  stop a thread. A single network call is not flagged: a check would not interrupt it
  (give it a timeout instead); a view that just renders a template never is.

``# graceful: ignore`` on the offending line, or on the ``def`` line (or the ``class``
line of a class-based view) for the whole view, silences a finding;
``# graceful: ignore[W004]`` only that id. The same findings are Django system checks
(:func:`django_graceful.checks.check_views`), and ``SILENCED_SYSTEM_CHECKS`` silences
them there as in ``checkshutdown --static``.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import FunctionType
from typing import Any

from ..._core import safetext
from ..._core.stacks import short_path
from ..render import CELL_WIDTH, one_line
from ..render import table as render_table
from ..status import CANNOT_CHECK, OK, PROBLEMS
from .findings import HINTS, IDS, WHY, Finding
from .rules import Function
from .source import Source, read
from .urlconf import CannotScan, View, project_views


@dataclass(slots=True)
class Scan:
    status: int
    reason: str
    urlconf: str = ""
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    views: int = 0
    silenced: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "urlconf": self.urlconf,
            "views": self.views,
            "silenced": self.silenced,
            "findings": [finding.as_dict() for finding in self.findings],
            "notes": self.notes,
        }


def main(options: dict[str, Any], stdout: Any, stderr: Any) -> int:
    """``checkshutdown --static``: the table (or JSON) on stdout, notes on stderr."""
    from django.conf import settings

    result = scan(silenced=getattr(settings, "SILENCED_SYSTEM_CHECKS", ()))
    if options.get("json"):
        stdout.write(safetext.dumps(result.as_dict(), indent=2))
    else:
        if result.findings:
            stdout.write(table(result.findings))
            stdout.write("")
            for line in legend(result.findings):
                stdout.write(line)
        for note in result.notes:
            stderr.write(note)
        stdout.write(result.reason)
    stdout.flush()
    return result.status


def scan(urlconf: Any = None, *, silenced: Iterable[str] = ()) -> Scan:
    """Read the views of ``urlconf`` (default ``settings.ROOT_URLCONF``), leaving out the
    ``silenced`` check ids; never raises for what it reads: an unreadable view is a note,
    an URLconf that does not import a CANNOT_CHECK."""
    if urlconf is None:
        from django.conf import settings

        urlconf = getattr(settings, "ROOT_URLCONF", None)
        if not urlconf:
            return Scan(CANNOT_CHECK, "cannot check: ROOT_URLCONF is not set")
    name = urlconf if isinstance(urlconf, str) else getattr(urlconf, "__name__", repr(urlconf))
    try:
        views = project_views(urlconf)
    except CannotScan as exc:
        return Scan(CANNOT_CHECK, f"cannot check: {exc}", urlconf=name)
    reader = _Reader()
    findings: list[Finding] = []
    unreadable = 0
    for view in views:
        read = False
        for function in view.functions:
            try:
                found = reader.check(view, function)
            except Exception as exc:  # a bug here must not hide the other views
                reader.notes.append(f"{view.name}: not scanned ({one_line(exc)})")
                continue
            if found is not None:
                read = True
                findings.extend(found)
        unreadable += not read and bool(view.functions)
    silenced = set(silenced)
    shown = sorted(
        (f for f in findings if f.id not in silenced), key=lambda f: (f.id, f.file, f.line)
    )
    result = Scan(OK, "", urlconf=name, findings=shown, notes=reader.notes)
    result.views = len(views) - unreadable
    result.silenced = len(findings) - len(shown)
    result.status, result.reason = _verdict(shown, len(views), unreadable, result.silenced)
    return result


def _verdict(
    findings: list[Finding], views: int, unreadable: int, silenced: int
) -> tuple[int, str]:
    read = views - unreadable
    if views and not read:
        return CANNOT_CHECK, f"cannot check: no view's source could be read ({views} views)"
    asides = [f"{unreadable} could not be read"] if unreadable else []
    asides += [f"{silenced} silenced"] if silenced else []
    also = f" ({', '.join(asides)})" if asides else ""
    if not findings:
        return OK, f"OK: no problems in {read} view{'s' * (read != 1)}{also}"
    kinds = Counter(finding.kind for finding in findings)
    listed = ", ".join(f"{kinds[kind]} {kind}" for kind in IDS if kind in kinds)
    n, bad = len(findings), len({finding.view for finding in findings})
    return PROBLEMS, (
        f"{n} problem{'s' * (n != 1)} in {bad} of {read} view{'s' * (read != 1)}: {listed}{also}"
    )


class _Reader:
    """Parses each file once and checks functions of it; collects one-line notes."""

    def __init__(self) -> None:
        self.sources: dict[str, Source | None] = {}
        self.notes: list[str] = []

    def check(self, view: View, function: FunctionType) -> list[Finding] | None:
        """The findings in ``function`` (None if its source cannot be read: noted)."""
        path = inspect.getsourcefile(function)
        if path is None:
            where = short_path(function.__code__.co_filename)
            self.notes.append(f"{view.name}: no source file ({where})")
            return None
        source = self._source(path)
        if source is None:
            return None
        code = function.__code__
        if code.co_name == "<lambda>":
            return []  # one expression: nothing this scan looks for fits in it
        found = source.defs.get((code.co_name, code.co_firstlineno))
        if found is None:
            self.notes.append(
                f"{view.name}: {short_path(path)} has no `def {code.co_name}` at line "
                f"{code.co_firstlineno} (changed since it was imported?)"
            )
            return None
        node, cls = found
        return Function(view, function, source, node, cls).findings()

    def _source(self, path: str) -> Source | None:
        if path in self.sources:
            return self.sources[path]
        try:
            source: Source | None = read(path)
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as exc:
            self.notes.append(f"cannot read {short_path(path)}: {one_line(exc)}")
            source = None
        self.sources[path] = source
        return source


# -- showing --------------------------------------------------------------------------

HEADERS = ("ID", "VIEW", "LOCATION", "FINDING")


def table(findings: list[Finding]) -> str:
    """The findings as a plain-text table (no colours), with a header line."""
    return render_table(
        HEADERS,
        ((f.id, f.view, f.location, f.what) for f in findings),
        widths=(CELL_WIDTH, CELL_WIDTH, CELL_WIDTH, CELL_WIDTH + 30),
    )


def legend(findings: list[Finding]) -> list[str]:
    """For each id found: why it matters, and the fix."""
    lines = []
    for kind, check_id in IDS.items():
        if any(finding.kind == kind for finding in findings):
            lines.append(f"{check_id} {kind}: {WHY[kind]}.")
            lines.append(f"  fix: {HINTS[kind]}")
    return lines
