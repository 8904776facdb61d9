"""The public decorators keep the decorated function's type for the users' type checkers.

mypy checks tests/typing/decorated.py (``assert_type`` on what the decorated views and hooks
return, and calls it must reject) together with tests/typing/wrong_on_purpose.py, whose one
wrong assertion it must report: a run that checked nothing, or saw only ``Any``, fails.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from django.http import HttpRequest

from django_graceful import signals
from django_graceful._core.hooks import hook_name

ROOT = Path(__file__).resolve().parent.parent
TYPED = Path("tests/typing/decorated.py")
WRONG = Path("tests/typing/wrong_on_purpose.py")
MYPY_TIMEOUT = 100  # seconds; a cold run takes a few


def run_mypy(*files: Path, cache_dir: Path) -> tuple[int, list[str]]:
    """mypy with the project's configuration; errors reported for ``files`` only."""
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        "pyproject.toml",
        # The package's own modules are read for their types, but their errors are
        # `mypy django_graceful`'s business, not this test's.
        "--follow-imports=silent",
        "--cache-dir",
        str(cache_dir),
        "--no-pretty",
        "--show-error-codes",
        "--no-error-summary",
        *map(str, files),
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=MYPY_TIMEOUT, check=False
    )
    if done.returncode not in (0, 1):  # 2: mypy itself failed (config, crash, not installed)
        pytest.fail(f"mypy could not run (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return done.returncode, [line for line in done.stdout.splitlines() if ": error:" in line]


@pytest.mark.timeout(MYPY_TIMEOUT + 20)
def test_mypy_sees_the_decorated_types(tmp_path: Path) -> None:
    status, errors = run_mypy(TYPED, WRONG, cache_dir=tmp_path / "mypy")
    wrong_line = next(
        number
        for number, line in enumerate((ROOT / WRONG).read_text().splitlines(), 1)
        if line.strip().startswith("assert_type(") and "# wrong on purpose" in line
    )
    expected = re.compile(
        rf'^{re.escape(str(WRONG))}:{wrong_line}: error: Expression is of type "HttpResponse", '
        r'not "int"  \[assert-type\]$'
    )
    # Exactly the one deliberate error: decorated.py is clean, and the wrong assertion is
    # reported with the view's real return type (an erased one would read "Any").
    assert status == 1, errors
    assert len(errors) == 1 and expected.match(errors[0]), "\n".join(errors)


@pytest.fixture
def decorated() -> Iterator[ModuleType]:
    """tests/typing/decorated.py imported, its two hooks disconnected afterwards."""
    module = importlib.import_module("tests.typing.decorated")
    yield module
    for kind, hook in module.HOOKS:
        signal = signals.startup if kind == "on_startup" else signals.shutdown
        signal.disconnect(dispatch_uid=f"graceful:{kind}:{hook_name(hook)}")


async def test_the_typed_file_runs_as_python(decorated: ModuleType) -> None:
    # Decorating worked at import; every call mypy checked works at run time too.
    await decorated.decorated_functions_keep_their_types(HttpRequest())
    for name in ("async_view", "sync_view", "async_view_with_options", "sync_view_with_options"):
        assert getattr(decorated, name).__wrapped__.__name__ == name
