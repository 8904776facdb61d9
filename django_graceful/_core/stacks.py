"""Where work is: a task's await chain or a thread's stack, down to its innermost project frame.

Everything here reads frames of other tasks and threads without stopping them (the
heartbeat thread calls it while the event loop runs, or while it is frozen). Only
file names, line numbers and function names leave this module: never local variables.
"""

from __future__ import annotations

import gc
import os
import sys
import sysconfig
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any

#: Frames shown in an await chain or a thread's stack (innermost last).
CHAIN_LENGTH = 6
#: Bound on the frames walked in one chain (a runaway recursion stays cheap).
MAX_DEPTH = 200


@dataclass(frozen=True, slots=True)
class Where:
    """One frame, as far as a report needs it: file, line and function."""

    file: str
    line: int
    function: str

    def __str__(self) -> str:
        return f"{short_path(self.file)}:{self.line} in {self.function}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "function": self.function}


def where(frame: FrameType) -> Where:
    return Where(frame.f_code.co_filename, frame.f_lineno or 0, frame.f_code.co_name)


# -- project code ---------------------------------------------------------------------


def _library_roots() -> tuple[str, ...]:
    """Folders whose files are not the project's: the standard library, installed
    packages, and the packages a Django request passes through on its way to a view."""
    roots: set[str] = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(os.path.realpath(path))
    for name in ("django", "asgiref", "django_graceful"):
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if file:
            roots.add(os.path.realpath(os.path.dirname(file)))
    return tuple(sorted(root.rstrip(os.sep) + os.sep for root in roots))


_roots: tuple[str, ...] | None = None
_project: dict[str, bool] = {}
_short: dict[str, str] = {}


def is_project_file(filename: str) -> bool:
    """True for the project's own code (cached per file name)."""
    known = _project.get(filename)
    if known is not None:
        return known
    global _roots
    if _roots is None:
        _roots = _library_roots()
    if filename.startswith("<"):  # <frozen ...>, <string>
        result = False
    else:
        path = os.path.realpath(filename)
        result = not path.startswith(_roots) and not any(
            part in path for part in ("/site-packages/", "/dist-packages/")
        )
    _project[filename] = result
    return result


def short_path(filename: str) -> str:
    """A file name to show: relative to the working folder or to site-packages/stdlib."""
    known = _short.get(filename)
    if known is not None:
        return known
    short = filename
    stdlib = sysconfig.get_paths().get("stdlib", "")
    cwd = os.getcwd() + os.sep
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in filename:
            short = filename.split(marker, 1)[1]
            break
    else:
        if stdlib and filename.startswith(stdlib + os.sep):
            short = filename[len(stdlib) + 1 :]
        elif filename.startswith(cwd):
            short = filename[len(cwd) :]
    _short[filename] = short
    return short


# -- chains and stacks ----------------------------------------------------------------


def await_chain(awaitable: Any) -> list[FrameType]:
    """The frames of a coroutine (or generator) and of what it awaits, outermost first."""
    frames: list[FrameType] = []
    for _ in range(MAX_DEPTH):
        if awaitable is None:
            break
        frame = (
            getattr(awaitable, "cr_frame", None)
            or getattr(awaitable, "gi_frame", None)
            or getattr(awaitable, "ag_frame", None)
        )
        if frame is not None:
            frames.append(frame)
        awaitable = (
            getattr(awaitable, "cr_await", None)
            or getattr(awaitable, "gi_yieldfrom", None)
            or getattr(awaitable, "ag_await", None)
        )
    return frames


def stack(frame: FrameType | None) -> list[FrameType]:
    """A thread's frames from ``frame`` (its innermost) outwards, returned outermost first."""
    frames: list[FrameType] = []
    while frame is not None and len(frames) < MAX_DEPTH:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    return frames


def innermost_project(frames: list[FrameType]) -> Where | None:
    for frame in reversed(frames):
        if is_project_file(frame.f_code.co_filename):
            return where(frame)
    return None


def chain(frames: list[FrameType], length: int = CHAIN_LENGTH) -> list[str]:
    """The innermost ``length`` frames, as ``file:line in function`` (innermost last)."""
    return [label(frame) for frame in frames[-length:]]


_labels: dict[tuple[CodeType, int], str] = {}


def label(frame: FrameType) -> str:
    """``file:line in function`` of a frame (cached: the same lines recur)."""
    key = (frame.f_code, frame.f_lineno or 0)
    text = _labels.get(key)
    if text is None:
        if len(_labels) > 10_000:
            _labels.clear()
        text = _labels[key] = str(where(frame))
    return text


#: Held while ``sys._current_frames()`` runs with the garbage collector off.
_frames_lock = threading.Lock()


def thread_frames() -> dict[int, FrameType]:
    """Every thread's innermost frame, by thread id.

    ``sys._current_frames()`` holds the interpreter's lock on its list of threads while it
    builds the dict; a garbage collection there runs weakref callbacks, which can hand the
    GIL to a thread that is starting and waits for that very lock: the whole process
    deadlocks (CPython gh-106883; Python 3.11 has no fix). So it runs with the collector
    off, one call at a time.
    """
    with _frames_lock:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return sys._current_frames()
        finally:
            if enabled:
                gc.enable()


# -- sync code awaited by a task ------------------------------------------------------


def _asgiref_codes() -> tuple[Any, Any] | None:
    try:
        from asgiref.sync import SyncToAsync

        return SyncToAsync.__call__.__code__, SyncToAsync.thread_handler.__code__
    except (ImportError, AttributeError):  # pragma: no cover - another asgiref
        return None


_codes = _asgiref_codes()


def awaited_sync_call(frames: list[FrameType]) -> object | None:
    """The sync call a task waits for, if its innermost frame is asgiref's
    ``sync_to_async`` (the identity of the call, to find the thread that runs it)."""
    if _codes is None or not frames or frames[-1].f_code is not _codes[0]:
        return None
    return frames[-1].f_locals.get("child")


def sync_calls(frames_by_thread: dict[int, FrameType]) -> dict[int, int]:
    """``id(key) -> thread id`` for every thread running a ``sync_to_async`` call.

    Two keys per call: the call itself (what a task awaiting it holds), and the
    cancellation token of the request it was given (Django calls a sync view as
    ``view(request, ...)``). The second finds the thread of a sync view whose task no
    longer awaits it: cancelled by a disconnect, asgiref lets that task go while the
    thread runs on, and Django's handler then waits behind it (its ``request_finished``
    receivers need the same thread).
    """
    found: dict[int, int] = {}
    if _codes is None:
        return found
    handler = _codes[1]
    for ident, frame in frames_by_thread.items():
        for _, outer in zip(range(MAX_DEPTH), _outwards(frame), strict=False):
            if outer.f_code is handler:
                args = outer.f_locals.get("args")
                if isinstance(args, tuple) and args:
                    found[id(args[0])] = ident
                    token = _request_token(args[0])
                    if token is not None:
                        found.setdefault(id(token), ident)
                break
    return found


def _request_token(call: object) -> object | None:
    """The ``cancellation`` of the request a ``functools.partial`` call was given first."""
    first = getattr(call, "args", None)
    if not isinstance(first, tuple) or not first:
        return None
    try:
        return getattr(first[0], "cancellation", None)
    except Exception:  # a lazy object whose attribute raises
        return None


def _outwards(frame: FrameType | None) -> Iterator[FrameType]:
    while frame is not None:
        yield frame
        frame = frame.f_back
