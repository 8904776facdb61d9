"""A source file as the checks read it: parsed once, its functions, the names it imports."""

from __future__ import annotations

import ast
import tokenize
from dataclasses import dataclass

#: A function's definition.
Def = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass(slots=True)
class Source:
    """One parsed file: its lines, its functions, the names its imports bind."""

    path: str
    lines: list[str]
    #: (name, first line, decorators included) -> the def and the class it is a method of.
    defs: dict[tuple[str, int], tuple[Def, ast.ClassDef | None]]
    imports: dict[str, str]


def read(path: str) -> Source:
    """The file at ``path``, parsed (never run); raises OSError, SyntaxError,
    UnicodeDecodeError or ValueError if it cannot be read."""
    with tokenize.open(path) as file:
        text = file.read()
    tree = ast.parse(text, filename=path)
    imports: dict[str, str] = {}
    imported(tree, imports)
    return Source(path, text.splitlines(), _defs(tree), imports)


def _defs(tree: ast.Module) -> dict[tuple[str, int], tuple[Def, ast.ClassDef | None]]:
    defs: dict[tuple[str, int], tuple[Def, ast.ClassDef | None]] = {}
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


def imported(node: ast.AST, into: dict[str, str]) -> None:
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
            imported(child, into)
