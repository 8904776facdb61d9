"""The package's shape: no import cycle, and each layer imports only the layers below it.

Imports are read from the source with :mod:`ast`, including imports inside functions;
only those under ``if TYPE_CHECKING:`` are left out (they never run).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "django_graceful"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

#: What each private layer may import of the package (prefixes of module names).
#: The public modules at the top (asgi, middleware, testing, ...) may import anything.
LAYERS: dict[str, tuple[str, ...]] = {
    # leaf modules: nothing of the package
    "_serving.protocol": (),
    "_core.phases": (),
    "_core.process": (),
    "_core.deadlines": (),
    "_core.cancellation": (),
    "_core.stacks": (),
    "_core.signal_chain": (),
    "_core.door": (),
    "_core.quiet_connections": (),
    "_core.safetext": (),
    # the per-worker runtime: itself, the settings and the signals it sends
    "_core": ("_core", "conf", "signals"),
    # what the runtime offers views, and the ASGI connections it serves
    "_cancel": ("_core", "_cancel", "conf", "signals"),
    "_serving": ("_core", "_serving", "conf", "signals"),
    # one module per server: the runtime and the protocol words, never the entrypoint
    "adapters": ("_core", "_serving.protocol", "adapters"),
    # what reads the workers from outside, and the command-line helpers
    "_diagnosis": ("_core", "_diagnosis", "_cli", "conf", "signals"),
    "_cli": ("_cli", "conf"),
    # the pytest plugin's fixtures: the app in-process, or the drill's machinery
    "_testing": ("_cli", "_core", "_diagnosis", "_testing", "asgi", "conf"),
    # thin commands: parse, call the layers above, print
    "management": ("_cli", "_core", "_diagnosis", "conf"),
}


def folders() -> list[str]:
    """The package's folders (``_diagnosis.drill``), the package itself left out."""
    return sorted(
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in ROOT.rglob("__init__.py")
        if path.parent != ROOT
    )


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, except what sits under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports (by their name below the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
                if target != PACKAGE and not target.startswith(PACKAGE + "."):
                    continue
                target = target[len(PACKAGE) + 1 :]
            # ``from x import y``: y is a submodule of x, or a name defined in x
            targets = [
                f"{target}.{alias.name}".lstrip(".")
                if f"{target}.{alias.name}".lstrip(".") in known
                else target
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target.startswith(PACKAGE + "."):
                target = target[len(PACKAGE) + 1 :]
            if target in known and target != name:
                found.add(target)
    return found


@functools.cache
def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(name: str) -> str | None:
    """The most specific entry of LAYERS that ``name`` belongs to (None: a public module)."""
    matches = [layer for layer in LAYERS if name == layer or name.startswith(layer + ".")]
    return max(matches, key=len) if matches else None


def test_the_graph_sees_imports_inside_functions_and_skips_type_checking() -> None:
    graph = import_graph()
    # GracefulASGI imports the adapters at module level; asgi.get_asgi_application()
    # imports the Django handler inside the function.
    assert "adapters" in graph["asgi"] and "_serving.handler" in graph["asgi"]
    # adapters/__init__.detect() imports each server's module inside the function.
    assert {"adapters.uvicorn", "adapters.daphne"} <= graph["adapters"]
    # the lifecycle knows the driver contract it defines, never a server's driver
    assert "_core.driver" in graph["_core.lifecycle"]
    assert not any(name.startswith("adapters") for name in graph["_core.lifecycle"])


def test_a_cycle_is_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_the_package() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("name", sorted(name for name in modules() if layer_of(name)))
def test_each_layer_imports_only_what_lies_below_it(name: str) -> None:
    layer = layer_of(name)
    assert layer is not None
    allowed = LAYERS[layer]
    wrong = sorted(
        target
        for target in import_graph()[name]
        if not any(target == a or target.startswith(a + ".") for a in allowed)
    )
    assert not wrong, f"{name} ({layer}) imports {wrong}; it may import {allowed or 'nothing'}"


@pytest.mark.parametrize("folder", folders())
def test_every_folder_belongs_to_a_layer(folder: str) -> None:
    assert layer_of(folder) is not None, f"{folder} is in no layer of LAYERS"


def how_it_is_built() -> str:
    """The tree drawn in README's "How it is built" section."""
    readme = (ROOT.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## How it is built", 1)[1].split("\n## ", 1)[0]
    return section.split("```", 2)[1]


@pytest.mark.parametrize("name", sorted(modules()))
def test_how_it_is_built_names_every_folder_and_module(name: str) -> None:
    tree = how_it_is_built()
    path = modules()[name]
    if path.name == "__init__.py":
        folder = path.parent.name
        assert path.parent == ROOT or f"{folder}/" in tree, f"README's tree lacks {folder}/"
    else:
        assert path.stem in tree.replace(".py", " ").split() or path.name in tree, (
            f"README's tree lacks {name}"
        )
