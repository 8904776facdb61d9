"""Whether the project's ASGI application goes through GracefulASGI, read from its source.

Never imported: a project's ``asgi.py`` may start things (connections, threads, a server's
setup), and ``manage.py check``, ``migrate`` or ``showmigrations`` must not. The module is
found (``importlib.util.find_spec``, which imports its parent packages only) and its last
top-level binding of the name is read: an assignment, or an import followed to the module
it names (``from .asgi import application``). The verdict is WRAPPED when a call of
``django_graceful`` makes the value, PLAIN when only a known unwrapped factory does
(Django's ``get_asgi_application``, Channels' ``ProtocolTypeRouter``), and UNKNOWN when
the source does not say (a factory of the project's own, a module that is not source).
"""

from __future__ import annotations

import ast
import enum
import importlib.util
from pathlib import Path

#: Callables that make an application which is not wrapped in GracefulASGI.
PLAIN_FACTORIES = frozenset(
    {"django.core.asgi.get_asgi_application", "channels.routing.ProtocolTypeRouter"}
)
#: How many imports (``from .asgi import application``) are followed at most.
MAX_HOPS = 5


class Verdict(enum.Enum):
    WRAPPED = "wrapped"
    PLAIN = "plain"
    UNKNOWN = "unknown"


def read_entrypoint(path: str) -> Verdict:
    """The verdict on ``module.attribute`` (or ``module:attribute``)."""
    module, _, name = path.replace(":", ".").rpartition(".")
    for _ in range(MAX_HOPS):
        if not module or not name:
            return Verdict.UNKNOWN
        parsed = _parse(module)
        if parsed is None:
            return Verdict.UNKNOWN
        tree, package = parsed
        imports = _imports(tree, package)
        bound = _binding(tree, name)
        for _ in range(MAX_HOPS):  # application = django_app
            if not isinstance(bound, ast.Name) or bound.id in imports:
                break
            bound = _binding(tree, bound.id)
        if isinstance(bound, ast.Name):
            bound = imports[bound.id]
        if isinstance(bound, str):  # imported: read it where it comes from
            module, _, name = bound.rpartition(".")
            continue
        return Verdict.UNKNOWN if bound is None else _judge(bound, imports)
    return Verdict.UNKNOWN


def _parse(module: str) -> tuple[ast.Module, str] | None:
    """The module's syntax tree and its package (for relative imports), or None."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    try:
        tree = ast.parse(Path(spec.origin).read_bytes(), spec.origin)
    except (OSError, SyntaxError, ValueError):
        return None
    is_package = spec.submodule_search_locations is not None
    return tree, module if is_package else module.rpartition(".")[0]


def _imports(tree: ast.Module, package: str) -> dict[str, str]:
    """Top-level imported names -> their dotted path (``get_asgi_application`` ->
    ``django.core.asgi.get_asgi_application``)."""
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, package)
            for alias in node.names:
                if alias.name != "*":
                    names[alias.asname or alias.name] = f"{base}.{alias.name}".lstrip(".")
    return names


def _absolute(module: str, level: int, package: str) -> str:
    if not level:
        return module
    parts = package.split(".") if package else []
    parent = ".".join(parts[: len(parts) - (level - 1)]) if level - 1 <= len(parts) else ""
    return f"{parent}.{module}".strip(".") if module else parent


def _binding(tree: ast.Module, name: str) -> ast.expr | str | None:
    """The last top-level binding of ``name``: its value, or (imported) the dotted path."""
    bound: ast.expr | str | None = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            bound = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.target.id == name and node.value is not None:
                bound = node.value
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if (alias.asname or alias.name.split(".")[0]) == name:
                    bound = ast.Name(name)  # resolved through the imports
    return bound


def _judge(value: ast.expr, imports: dict[str, str]) -> Verdict:
    called = {_dotted(node.func, imports) for node in ast.walk(value) if isinstance(node, ast.Call)}
    if any(c == "django_graceful" or c.startswith("django_graceful.") for c in called if c):
        return Verdict.WRAPPED
    if called & PLAIN_FACTORIES:
        return Verdict.PLAIN
    return Verdict.UNKNOWN


def _dotted(node: ast.expr, imports: dict[str, str]) -> str | None:
    """``asgi.get_asgi_application`` -> ``django.core.asgi.get_asgi_application``."""
    attributes = []
    while isinstance(node, ast.Attribute):
        attributes.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in imports:
        return None
    return ".".join([imports[node.id], *reversed(attributes)])
