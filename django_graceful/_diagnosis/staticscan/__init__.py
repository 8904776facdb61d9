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
  ``urllib.request.urlopen``, ``subprocess.run``, ``send_mail``, …: :data:`BLOCKING_CALLS`,
  resolved through the module's imports). A nested sync function or a lambda runs
  elsewhere (``sync_to_async``, ``asyncio.to_thread``) and is not read;
- ``graceful.W005`` the sync ORM in an async view: ``X.objects.get()`` and the other
  evaluating methods (:data:`ORM_EVALUATING`), a ``for`` loop, a comprehension or
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

import ast
import functools
import inspect
import json
import re
import tokenize
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import FunctionType
from typing import Any

from ..._core.stacks import is_project_file, short_path
from ..render import CELL_WIDTH, one_line
from ..render import table as render_table
from ..status import CANNOT_CHECK, OK, PROBLEMS

#: Kinds of finding, in order of severity, and their check ids.
SWALLOWED, BLOCKING, SYNC_ORM, UNCHECKED = (
    "swallowed-cancel",
    "blocking-call",
    "sync-orm",
    "unchecked-sync",
)
IDS = {
    SWALLOWED: "graceful.W003",
    BLOCKING: "graceful.W004",
    SYNC_ORM: "graceful.W005",
    UNCHECKED: "graceful.W006",
}
WHY = {
    SWALLOWED: "the view runs on after a disconnect or a shutdown, past the grace period",
    BLOCKING: "the event loop stops: no other request of this worker runs, "
    "and no cancel lands until the call returns",
    SYNC_ORM: "Django raises SynchronousOnlyOperation "
    "(with DJANGO_ALLOW_ASYNC_UNSAFE, the event loop blocks instead)",
    UNCHECKED: "a sync view cannot be interrupted: it runs to its end "
    "after a disconnect or a shutdown",
}
HINTS = {
    SWALLOWED: "Re-raise CancelledError after the cleanup (a bare `raise`), "
    "or do the cleanup in @cancellable(on_cancel=...).",
    BLOCKING: "Await an async equivalent, or run the call in a thread: "
    "await sync_to_async(call)(...) or await asyncio.to_thread(call, ...).",
    SYNC_ORM: "Use the async ORM (await X.objects.aget(...), acount(), `async for`), "
    "or run the ORM work in await sync_to_async(...)(...).",
    UNCHECKED: "Call request.cancellation.raise_if_cancelled() in the loop "
    "(current_cancellation() in helpers); sleep with request.cancellation.wait(seconds).",
}

_HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options", "request")
_IN_A_THREAD = "or await asyncio.to_thread({name}, ...)."
#: Calls that block the thread they run in, by dotted name, with the fix for an async view.
BLOCKING_CALLS: dict[str, str] = {
    "time.sleep": "Use await asyncio.sleep(...).",
    **{
        f"requests.{method}": "Use an async client (httpx.AsyncClient), " + _IN_A_THREAD
        for method in _HTTP_METHODS
    },
    **{
        f"httpx.{method}": "Use httpx.AsyncClient, " + _IN_A_THREAD
        for method in (*_HTTP_METHODS, "stream")
    },
    "urllib.request.urlopen": "Use an async client (httpx.AsyncClient), " + _IN_A_THREAD,
    **{
        f"subprocess.{name}": "Use asyncio.create_subprocess_exec(...), " + _IN_A_THREAD
        for name in ("run", "call", "check_call", "check_output")
    },
    "os.system": "Use asyncio.create_subprocess_shell(...), " + _IN_A_THREAD,
    "socket.create_connection": "Use asyncio.open_connection(...), " + _IN_A_THREAD,
    **{
        f"django.core.mail.{name}": "Send it in a thread: await sync_to_async({name})(...)."
        for name in ("send_mail", "send_mass_mail", "mail_admins", "mail_managers")
    },
}
#: Blocking calls that make a sync view one that can run long (a sleep could be a wait).
LONG_SYNC_CALLS = frozenset({"time.sleep"})
#: QuerySet/manager methods that run SQL right away.
ORM_EVALUATING = frozenset(
    "get create count exists first last update delete get_or_create update_or_create "
    "bulk_create bulk_update aggregate in_bulk latest earliest iterator explain contains".split()
)
#: QuerySet/manager methods that return a queryset without running SQL.
ORM_LAZY = frozenset(
    "all filter exclude order_by reverse distinct values values_list dates datetimes none "
    "union intersection difference select_related prefetch_related extra annotate alias defer "
    "only using select_for_update raw".split()
)
_SHORTCUTS = frozenset({"django.shortcuts.get_object_or_404", "django.shortcuts.get_list_or_404"})
#: Builtins that evaluate the queryset they are given.
_EVALUATING_BUILTINS = frozenset(
    {"list", "tuple", "set", "frozenset", "dict", "len", "sorted", "bool", "sum", "min", "max"}
)
_CANCEL_EXCEPTIONS = frozenset(
    {
        "asyncio.CancelledError",
        "asyncio.exceptions.CancelledError",
        "BaseException",
        "builtins.BaseException",
    }
)
#: Call names (their last part) that run their argument elsewhere: a thread, an executor.
_OFFLOADERS = frozenset(
    {"sync_to_async", "database_sync_to_async", "to_thread", "run_in_executor", "submit"}
)
#: Names whose presence in a sync view means it looks at its cancellation.
_CANCEL_WORDS = frozenset(
    {"cancellation", "current_cancellation", "raise_if_cancelled", "cancelled", "is_shutting_down"}
)
#: The request's own data, bounded by its size (DATA_UPLOAD_MAX_NUMBER_FIELDS and the like).
#: Queryset methods whose result a ``for`` loop iterates row by row (W006).
ORM_ITERATING = ORM_LAZY | {"iterator"}
#: Iterators that never end by themselves (W006).
_ENDLESS = frozenset({"itertools.count", "itertools.cycle", "itertools.repeat"})
_IGNORE = re.compile(r"#\s*graceful:\s*ignore\b(?:\[([^\]]*)\])?")
_NESTED_ELSEWHERE = (ast.FunctionDef, ast.Lambda, ast.ClassDef)
_TRY = (ast.Try, ast.TryStar)
_Def = ast.FunctionDef | ast.AsyncFunctionDef


class CannotScan(Exception):
    """The URLconf cannot be walked (the message says why, on one line)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in one view: where it is, what it is, why it matters and the fix."""

    id: str
    kind: str
    view: str
    function: str
    file: str
    line: int
    what: str
    hint: str

    @property
    def location(self) -> str:
        return f"{short_path(self.file)}:{self.line}"

    @property
    def message(self) -> str:
        return f"{self.what}; {WHY[self.kind]}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "view": self.view,
            "file": self.file,
            "line": self.line,
            "function": self.function,
            "kind": self.kind,
            "message": self.message,
            "hint": self.hint,
        }


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
        stdout.write(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
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


# -- the URLconf ----------------------------------------------------------------------


@dataclass(slots=True)
class View:
    """A view of the project: its dotted path and the functions that are its code."""

    name: str
    functions: list[FunctionType]


def project_views(urlconf: Any) -> list[View]:
    """The project's views in URLconf order, each once (library views left out)."""
    from django.urls import URLResolver, get_resolver

    def patterns(resolver: URLResolver, depth: int = 0) -> Iterable[Any]:
        if depth > 50:  # an include that includes itself
            return
        for pattern in resolver.url_patterns:
            if isinstance(pattern, URLResolver):
                yield from patterns(pattern, depth + 1)
            else:
                yield pattern

    try:
        callbacks = [pattern.callback for pattern in patterns(get_resolver(urlconf))]
    except Exception as exc:
        raise CannotScan(f"the URLconf {urlconf!r} cannot be loaded: {one_line(exc)}") from None
    views: dict[str, View] = {}
    for callback in callbacks:
        view = _view(callback)
        if view is not None and view.name not in views:
            views[view.name] = view
    return list(views.values())


def _view(callback: Any) -> View | None:
    cls = getattr(callback, "view_class", None)
    if isinstance(cls, type):
        functions: list[FunctionType] = []
        methods = getattr(cls, "http_method_names", None) or _HTTP_METHODS
        for method in (*methods, "dispatch"):
            function = _function(getattr(cls, method, None))
            if function is not None and function not in functions and _ours(function):
                functions.append(function)
        module_file = getattr(inspect.getmodule(cls), "__file__", None)
        if not functions and not (module_file and is_project_file(module_file)):
            return None
        return View(f"{cls.__module__}.{cls.__qualname__}", functions)
    function = _function(callback)
    if function is None or not _ours(function):
        return None
    return View(f"{function.__module__}.{function.__qualname__}", [function])


def _function(obj: Any) -> FunctionType | None:
    """The function under decorators, partials and bound methods."""
    for _ in range(100):
        if isinstance(obj, functools.partial):
            obj = obj.func
        elif inspect.ismethod(obj):
            obj = obj.__func__
        elif getattr(obj, "__wrapped__", None) is not None:
            obj = obj.__wrapped__
        else:
            break
    return obj if isinstance(obj, FunctionType) else None


def _ours(function: FunctionType) -> bool:
    return is_project_file(function.__code__.co_filename)


# -- reading a function ---------------------------------------------------------------


@dataclass(slots=True)
class _Source:
    path: str
    lines: list[str]
    #: (name, first line, decorators included) -> the def and the class it is a method of.
    defs: dict[tuple[str, int], tuple[_Def, ast.ClassDef | None]]
    imports: dict[str, str]


class _Reader:
    """Parses each file once and checks functions of it; collects one-line notes."""

    def __init__(self) -> None:
        self.sources: dict[str, _Source | None] = {}
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
        return _Function(view, function, source, node, cls).findings()

    def _source(self, path: str) -> _Source | None:
        if path in self.sources:
            return self.sources[path]
        try:
            with tokenize.open(path) as file:
                text = file.read()
            tree = ast.parse(text, filename=path)
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as exc:
            self.notes.append(f"cannot read {short_path(path)}: {one_line(exc)}")
            self.sources[path] = None
            return None
        imports: dict[str, str] = {}
        _imports(tree, imports)
        source = _Source(path, text.splitlines(), _defs(tree), imports)
        self.sources[path] = source
        return source


def _defs(tree: ast.Module) -> dict[tuple[str, int], tuple[_Def, ast.ClassDef | None]]:
    defs: dict[tuple[str, int], tuple[_Def, ast.ClassDef | None]] = {}
    stack: list[tuple[ast.AST, ast.ClassDef | None]] = [(tree, None)]
    while stack:
        node, cls = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                defs[(child.name, first)] = (child, cls)
                stack.append((child, None))
            elif isinstance(child, ast.ClassDef):
                stack.append((child, child))
            else:
                stack.append((child, cls))
    return defs


def _imports(node: ast.AST, into: dict[str, str]) -> None:
    """Names bound by the imports of ``node``'s own statements (not nested functions)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
            for alias in child.names:
                if alias.asname:
                    into[alias.asname] = alias.name
                else:
                    top = alias.name.partition(".")[0]
                    into[top] = top
        elif isinstance(child, ast.ImportFrom):
            module = "." * child.level + (child.module or "")
            for alias in child.names:
                if alias.name != "*":
                    into[alias.asname or alias.name] = f"{module}.{alias.name}"
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        elif isinstance(child, ast.stmt | ast.excepthandler | ast.match_case):
            _imports(child, into)


def _scope(body: list[ast.stmt], *, async_defs: bool) -> list[ast.AST]:
    """The nodes of a function's own code, in source order: not nested sync functions,
    lambdas or classes (they run elsewhere, later or never); nested async functions when
    ``async_defs`` (they run on the same event loop)."""

    def own(node: ast.AST) -> bool:
        if isinstance(node, _NESTED_ELSEWHERE):
            return False
        return async_defs or not isinstance(node, ast.AsyncFunctionDef)

    nodes: list[ast.AST] = []
    stack: list[ast.AST] = [node for node in reversed(body) if own(node)]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(child for child in reversed(list(ast.iter_child_nodes(node))) if own(child))
    return nodes


class _Function:
    """The checks of one function of a view."""

    def __init__(
        self,
        view: View,
        function: FunctionType,
        source: _Source,
        node: _Def,
        cls: ast.ClassDef | None,
    ) -> None:
        self.view = view
        self.function = function
        self.source = source
        self.node = node
        self.cls = cls
        self.is_async = isinstance(node, ast.AsyncFunctionDef)
        self.nodes = _scope(node.body, async_defs=self.is_async)
        # a local name (an argument, an assignment) hides a module-level import
        local = {arg.arg for arg in ast.walk(node.args) if isinstance(arg, ast.arg)}
        local.update(
            n.id for n in self.nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        )
        self.imports = {name: to for name, to in source.imports.items() if name not in local}
        for statement in self.nodes:
            if isinstance(statement, ast.Import | ast.ImportFrom):
                _imports(ast.Module(body=[statement], type_ignores=[]), self.imports)
        self.parents = {
            child: parent for parent in ast.walk(node) for child in ast.iter_child_nodes(parent)
        }
        self.querysets = self._querysets() if self.is_async else set()

    def findings(self) -> list[Finding]:
        if self.is_async:
            candidates = [*self._swallowed(), *self._blocking(), *self._sync_orm()]
        else:
            candidates = self._unchecked()
        findings: list[Finding] = []
        seen: set[tuple[str, int]] = set()
        for kind, lines, what, hint in candidates:
            line = lines[0]
            if (kind, line) in seen or self._ignored(IDS[kind], lines):
                continue
            seen.add((kind, line))
            findings.append(
                Finding(
                    id=IDS[kind],
                    kind=kind,
                    view=self.view.name,
                    function=self.function.__qualname__,
                    file=self.source.path,
                    line=line,
                    what=what,
                    hint=hint,
                )
            )
            if kind == UNCHECKED:
                break  # one per sync function: its first long part
        return findings

    # -- W003

    def _swallowed(self) -> Iterable[tuple[str, list[int], str, str]]:
        for node in self.nodes:
            if isinstance(node, _TRY) and self._awaits(node.body):
                for statement in _scope(node.finalbody, async_defs=False):
                    if isinstance(statement, ast.Return):
                        what = "`return` in `finally` swallows the cancellation"
                        hint = "Return after the try statement, not from its `finally`."
                        yield SWALLOWED, [statement.lineno], what, hint
                for handler in node.handlers:
                    caught = self._catches_cancel(handler.type)
                    if caught is not None and not self._raises(handler.body):
                        star = "*" if isinstance(node, ast.TryStar) else ""
                        what = (
                            f"`except{star} {caught}` with no raise swallows the cancellation"
                            if caught
                            else "bare `except:` with no raise swallows the cancellation"
                        )
                        yield SWALLOWED, [handler.lineno], what, HINTS[SWALLOWED]
            elif isinstance(node, ast.With | ast.AsyncWith) and self._awaits(node.body):
                for item in node.items:
                    expr = item.context_expr
                    if (
                        isinstance(expr, ast.Call)
                        and self._name(expr.func) == "contextlib.suppress"
                        and any(self._catches_cancel(arg) for arg in expr.args)
                    ):
                        what = f"`{_short(expr)}` swallows the cancellation"
                        hint = "Suppress Exception, not the cancellation (it is a BaseException)."
                        yield SWALLOWED, [expr.lineno], what, hint

    def _catches_cancel(self, expr: ast.expr | None) -> str | None:
        """'' for a bare except, the caught name if it catches CancelledError, else None."""
        if expr is None:
            return ""
        for element in expr.elts if isinstance(expr, ast.Tuple) else [expr]:
            if self._name(element, imported=False) in _CANCEL_EXCEPTIONS:
                return _short(element)
        return None

    def _awaits(self, body: list[ast.stmt]) -> bool:
        return any(
            isinstance(node, ast.Await | ast.AsyncFor | ast.AsyncWith)
            for node in _scope(body, async_defs=False)
        )

    def _raises(self, body: list[ast.stmt]) -> bool:
        return any(isinstance(node, ast.Raise) for node in _scope(body, async_defs=False))

    # -- W004

    def _blocking(self) -> Iterable[tuple[str, list[int], str, str]]:
        for node in self.nodes:
            if isinstance(node, ast.Call) and not self._elsewhere(node):
                name = self._name(node.func)
                if name in BLOCKING_CALLS:
                    shown = name.rsplit(".", 1)[-1] if name.startswith("django.") else name
                    hint = BLOCKING_CALLS[name].format(name=_short(node.func))
                    yield BLOCKING, _lines(node), f"{shown}() blocks the event loop", hint

    # -- W005

    def _sync_orm(self) -> Iterable[tuple[str, list[int], str, str]]:
        hint = HINTS[SYNC_ORM]
        for node in self.nodes:
            if isinstance(node, ast.Call) and not self._elsewhere(node):
                func = node.func
                if (
                    isinstance(func, ast.Attribute)
                    and func.attr in ORM_EVALUATING
                    and self._on_manager(func.value)
                ):
                    what = f"`{_short(func)}()` runs the sync ORM"
                    yield SYNC_ORM, _lines(node), what, hint
                elif self._name(func) in _SHORTCUTS:
                    name = self._name(func).rsplit(".", 1)[-1]
                    what = f"`{name}()` runs the sync ORM"
                    yield SYNC_ORM, _lines(node), what, f"Use await a{name}(...)."
                elif (
                    isinstance(func, ast.Name)
                    and func.id in _EVALUATING_BUILTINS
                    and func.id not in self.imports
                    and node.args
                    and self._has_queryset(node.args[0])
                ):
                    what = f"`{func.id}()` of a queryset runs the sync ORM"
                    yield SYNC_ORM, _lines(node), what, hint
            elif isinstance(node, ast.For) and self._has_queryset(node.iter):
                yield SYNC_ORM, [node.lineno], "`for` over a queryset runs the sync ORM", hint
            elif isinstance(node, ast.comprehension) and not node.is_async:
                if self._has_queryset(node.iter) and not self._elsewhere(node.iter):
                    what = "a comprehension over a queryset runs the sync ORM"
                    yield SYNC_ORM, [node.iter.lineno], what, hint

    def _on_manager(self, expr: ast.expr) -> bool:
        """``expr`` is a chain on a model's manager (``Book.objects.filter(…)``) or on a
        name that only ever holds a lazy queryset."""
        node: ast.AST = expr
        while True:
            if isinstance(node, ast.Attribute):
                if _is_manager(node):
                    return True
                node = node.value
            elif isinstance(node, ast.Call):
                node = node.func
            elif isinstance(node, ast.Subscript):
                node = node.value
            else:
                return isinstance(node, ast.Name) and node.id in self.querysets

    def _has_queryset(self, expr: ast.expr) -> bool:
        """Some part of ``expr`` is a queryset evaluated here (not awaited, not offloaded)."""
        stack: list[ast.AST] = [expr]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Await | ast.Lambda) or (
                isinstance(node, ast.Call) and self._offloads(node)
            ):
                continue
            if isinstance(node, ast.Attribute) and _is_manager(node):
                return True
            if isinstance(node, ast.Name) and node.id in self.querysets:
                return True
            stack.extend(ast.iter_child_nodes(node))
        return False

    def _querysets(self) -> set[str]:
        """Local names every assignment of which is a lazy queryset (``qs = X.objects.all()``)."""
        bound: dict[str, list[ast.expr | None]] = {}
        for node in self.nodes:
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                parent = self.parents.get(node)
                value = None
                if isinstance(parent, ast.Assign) and parent.targets == [node]:
                    value = parent.value
                elif isinstance(parent, ast.AnnAssign) and parent.target is node:
                    value = parent.value
                bound.setdefault(node.id, []).append(value)
        names = set(bound)
        changed = True
        while changed:
            self.querysets = names
            lazy = {name for name in names if all(self._lazy(v) for v in bound[name])}
            changed = lazy != names
            names = lazy
        return names

    def _lazy(self, value: ast.expr | None) -> bool:
        if value is None or not self._on_manager(value):
            return False
        if isinstance(value, ast.Attribute | ast.Name):
            return True
        return (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Attribute)
            and value.func.attr in ORM_LAZY
        )

    # -- W006

    def _unchecked(self) -> list[tuple[str, list[int], str, str]]:
        if any(
            (isinstance(node, ast.Name) and node.id in _CANCEL_WORDS)
            or (isinstance(node, ast.Attribute) and node.attr in _CANCEL_WORDS)
            for statement in self.node.body
            for node in ast.walk(statement)
        ):
            return []
        found = []
        for node in self.nodes:
            if isinstance(node, ast.While):
                found.append(([node.lineno], "`while` loop"))
            elif isinstance(node, ast.For) and self._unbounded(node.iter):
                found.append(([node.lineno], "`for` loop over " + _loop_over(node.iter)))
            elif isinstance(node, ast.Call) and self._name(node.func) in LONG_SYNC_CALLS:
                found.append((_lines(node), f"{self._name(node.func)}()"))
        return [
            (UNCHECKED, lines, f"{what}, no cancellation check", HINTS[UNCHECKED])
            for lines, what in sorted(found, key=lambda candidate: candidate[0][0])
        ]

    def _unbounded(self, expr: ast.expr) -> bool:
        """A loop over this can run long: a queryset that is not sliced (``X.objects…``,
        ``obj.related.all()``, a name only bound to one, ``.iterator()``), ``range()`` past
        1000 or with a computed bound, ``itertools.count``/``cycle``/``repeat``, ``open()``.
        Anything else (a literal, a dict's items, a list built here, the request's data,
        a name whose origin is not known) is taken as short: no noise on ordinary views.
        """
        if isinstance(expr, ast.Call):
            name = self._name(expr.func, imported=False)
            if name == "range":
                limits = [a.value if isinstance(a, ast.Constant) else None for a in expr.args]
                return not all(isinstance(n, int) and abs(n) <= 1000 for n in limits)
            if name == "open" or self._name(expr.func) in _ENDLESS:
                return True
        node: ast.AST = expr
        lazy_call = False
        while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
            if isinstance(node, ast.Subscript):
                return False  # qs[:20]: sliced, bounded
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr in ORM_ITERATING:
                    lazy_call = True
                node = func
            else:
                if _is_manager(node):
                    return True
                node = node.value
        return lazy_call or (isinstance(node, ast.Name) and node.id in self.querysets)

    # -- helpers

    def _name(self, expr: ast.AST, *, imported: bool = True) -> str | None:
        """The dotted name ``expr`` refers to through the imports (``sleep`` ->
        ``time.sleep``); None unless it is a name or an attribute chain on one, and, if
        ``imported``, on a name an import binds (a local ``requests`` list is not it)."""
        parts = []
        while isinstance(expr, ast.Attribute):
            parts.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name) or (imported and expr.id not in self.imports):
            return None
        return ".".join([self.imports.get(expr.id, expr.id), *reversed(parts)])

    def _elsewhere(self, node: ast.AST) -> bool:
        """``node`` is awaited, or handed to something that runs it in another thread."""
        parent = self.parents.get(node)
        if isinstance(parent, ast.Await):
            return True
        child = node
        while parent is not None and parent is not self.node:
            if isinstance(parent, ast.Call) and child is not parent.func and self._offloads(parent):
                return True
            child, parent = parent, self.parents.get(parent)
        return False

    def _offloads(self, call: ast.Call) -> bool:
        """``sync_to_async(f)(…)``, ``asyncio.to_thread(f, …)``, ``loop.run_in_executor(…)``."""
        func = call.func.func if isinstance(call.func, ast.Call) else call.func
        name = self._name(func, imported=False)
        return name is not None and name.rsplit(".", 1)[-1] in _OFFLOADERS

    def _ignored(self, check_id: str, lines: list[int]) -> bool:
        candidates = [*lines, self.node.lineno]
        if self.cls is not None:
            candidates.append(self.cls.lineno)
        short_id = check_id.rsplit(".", 1)[-1]
        for number in candidates:
            if not 0 < number <= len(self.source.lines):
                continue
            match = _IGNORE.search(self.source.lines[number - 1])
            if match is None:
                continue
            if match.group(1) is None:
                return True
            wanted = {part.strip().rsplit(".", 1)[-1] for part in match.group(1).split(",")}
            if short_id in wanted:
                return True
        return False


def _loop_over(expr: ast.expr) -> str:
    text = ast.unparse(expr)
    return f"`{text}`" if len(text) <= 40 else f"`{text[:37]}...`"


def _is_manager(node: ast.Attribute) -> bool:
    """``Book.objects``, ``models.Book.objects``, ``self.model.objects``, ``X._default_manager``:
    ``objects`` counts on a class-like name (so ``self.objects``, a list, does not)."""
    if node.attr in ("_default_manager", "_base_manager"):
        return True
    if node.attr != "objects":
        return False
    owner = node.value
    name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
    return name[:1].isupper() or name == "model"


def _lines(node: ast.AST) -> list[int]:
    first = getattr(node, "lineno", 0)
    last = getattr(node, "end_lineno", None) or first
    return [first, last] if last != first else [first]


def _short(node: ast.AST, width: int = 60) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= width else text[: width - 1] + "…"


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
