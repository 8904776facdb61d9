"""The project's views: the URLconf walked down to the functions that are their code."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from types import FunctionType
from typing import Any

from ..._core.stacks import is_project_file
from ..render import one_line

#: A class-based view's handler methods, when it does not name its own.
_HANDLERS = ("get", "post", "put", "patch", "delete", "head", "options", "request")


class CannotScan(Exception):
    """The URLconf cannot be walked (the message says why, on one line)."""


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
        methods = getattr(cls, "http_method_names", None) or _HANDLERS
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
