"""The checks of one view function (W003-W006), read from its syntax tree."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from types import FunctionType

from .findings import BLOCKING, HINTS, IDS, SWALLOWED, SYNC_ORM, UNCHECKED, Finding
from .names import (
    BLOCKING_CALLS,
    CANCEL_EXCEPTIONS,
    CANCEL_WORDS,
    ENDLESS,
    EVALUATING_BUILTINS,
    LONG_SYNC_CALLS,
    OFFLOADERS,
    ORM_EVALUATING,
    ORM_ITERATING,
    ORM_LAZY,
    SHORTCUTS,
)
from .source import Def, Source, imported
from .urlconf import View

_IGNORE = re.compile(r"#\s*graceful:\s*ignore\b(?:\[([^\]]*)\])?")
_NESTED_ELSEWHERE = (ast.FunctionDef, ast.Lambda, ast.ClassDef)
_TRY = (ast.Try, ast.TryStar)


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


class Function:
    """The checks of one function of a view."""

    def __init__(
        self,
        view: View,
        function: FunctionType,
        source: Source,
        node: Def,
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
                imported(ast.Module(body=[statement], type_ignores=[]), self.imports)
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
            if self._name(element, imported=False) in CANCEL_EXCEPTIONS:
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
                elif (called := self._name(func)) is not None and called in SHORTCUTS:
                    name = called.rsplit(".", 1)[-1]
                    what = f"`{name}()` runs the sync ORM"
                    yield SYNC_ORM, _lines(node), what, f"Use await a{name}(...)."
                elif (
                    isinstance(func, ast.Name)
                    and func.id in EVALUATING_BUILTINS
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
            (isinstance(node, ast.Name) and node.id in CANCEL_WORDS)
            or (isinstance(node, ast.Attribute) and node.attr in CANCEL_WORDS)
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
            if name == "open" or self._name(expr.func) in ENDLESS:
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
        return name is not None and name.rsplit(".", 1)[-1] in OFFLOADERS

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
