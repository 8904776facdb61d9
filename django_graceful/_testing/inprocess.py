"""The project's ASGI application in-process, driven as a server would: lifespan, requests,
disconnects and the shutdown, through asgiref's ``ApplicationCommunicator``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from asgiref.testing import ApplicationCommunicator

from .._core import stacks
from .._core.lifecycle import Lifecycle, reset_lifecycle
from .._core.phases import Phase
from .._core.registry import Tracked
from ..asgi import GracefulASGI
from ..conf import get_settings

#: Seconds a helper waits by default for an answer from the application.
TIMEOUT = 5.0


class LifespanFailed(AssertionError):
    """The application answered ``lifespan.startup.failed`` (the message says why)."""


class HungAfterShutdown(AssertionError):
    """Work still ran when the shutdown ended (the message names it and its line)."""


@dataclass(frozen=True, slots=True)
class Response:
    """What the client received: status, headers (lower-case names) and the whole body."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class InFlight:
    """A request sent to the application whose response has not been read yet."""

    def __init__(self, communicator: ApplicationCommunicator) -> None:
        self._communicator = communicator
        self._left = False

    async def response(self, timeout: float = TIMEOUT) -> Response:
        """Read the whole response (every body chunk) within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        start = await self._next(deadline)
        if start.get("type") != "http.response.start":
            raise AssertionError(f"expected http.response.start, the app sent {start!r}")
        body = bytearray()
        while True:
            message = await self._next(deadline)
            if message.get("type") != "http.response.body":
                raise AssertionError(f"expected http.response.body, the app sent {message!r}")
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = {
            bytes(name).decode("latin-1").lower(): bytes(value).decode("latin-1")
            for name, value in start.get("headers", [])
        }
        return Response(int(start["status"]), headers, bytes(body))

    async def disconnect(self) -> None:
        """The client goes away (``http.disconnect``), as when a browser tab closes."""
        if not self._left:
            self._left = True
            await self._communicator.send_input({"type": "http.disconnect"})

    async def finished(self, timeout: float = TIMEOUT) -> None:
        """Wait until the application is done with this request; fail after ``timeout``
        (the request is left running). An exception the application raised is raised here.
        """
        future = self._communicator.future
        done, _ = await asyncio.wait({future}, timeout=timeout)
        if not done:
            raise AssertionError(f"the request was still running after {timeout:g} s")
        if not future.cancelled():
            future.result()

    async def _next(self, deadline: float) -> dict[str, Any]:
        left = max(0.0, deadline - time.monotonic())
        try:
            return dict(await self._communicator.receive_output(left))
        except TimeoutError:
            raise AssertionError("no response from the application in time") from None


@dataclass(frozen=True, slots=True)
class Shutdown:
    """How a shutdown went: seconds from ``lifespan.shutdown`` to its answer."""

    seconds: float
    message: dict[str, Any]


class GracefulTestApp:
    """The project's ASGI application, in-process, with a fresh lifecycle of its own."""

    def __init__(self, app: Any, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self._lifespan: ApplicationCommunicator | None = None
        #: Every request opened: a communicator that is garbage-collected cancels its app.
        self._opened: list[InFlight] = []

    @asynccontextmanager
    async def lifespan(self, timeout: float = TIMEOUT) -> AsyncIterator[dict[str, Any]]:
        """Start (``lifespan.startup``) and, on leaving, shut down; yields the state.

        The shutdown is skipped if the test already ran :meth:`shutdown`. Work that did
        not stop at the shutdown fails the test (:class:`HungAfterShutdown`, naming it and
        its line) and is then ended as the process exit would end it, so that the test's
        event loop can close.
        """
        self._quiet()
        state: dict[str, Any] = {}
        self._lifespan = ApplicationCommunicator(self.app, {"type": "lifespan", "state": state})
        await self._lifespan.send_input({"type": "lifespan.startup"})
        answer = await self._lifespan.receive_output(timeout)
        if answer.get("type") != "lifespan.startup.complete":
            raise LifespanFailed(answer.get("message") or f"startup answered {answer!r}")
        try:
            yield state
        except BaseException:
            if self._lifespan is not None:
                with contextlib.suppress(Exception):
                    await self.shutdown()
            _abandon(list(self.lifecycle.registry))
            raise
        if self._lifespan is not None:
            await self.shutdown()
        hung = list(self.lifecycle.registry)
        if hung:
            message = _hung_message(hung)
            _abandon(hung)
            raise HungAfterShutdown(message)

    async def shutdown(self, timeout: float | None = None) -> Shutdown:
        """Run the shutdown a server starts on SIGTERM, to its end.

        ``timeout`` defaults to the shutdown budget plus a second.
        """
        if self._lifespan is None:
            raise RuntimeError("shutdown() needs a running lifespan: use `async with lifespan()`")
        communicator, self._lifespan = self._lifespan, None
        bound = timeout if timeout is not None else self.lifecycle.budget() + 1
        began = time.monotonic()
        await communicator.send_input({"type": "lifespan.shutdown"})
        try:
            message = dict(await communicator.receive_output(bound))
        except TimeoutError:
            raise AssertionError(f"the shutdown did not finish within {bound:g} s") from None
        return Shutdown(time.monotonic() - began, message)

    async def open(
        self,
        path: str,
        *,
        method: str = "GET",
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
    ) -> InFlight:
        """Send a whole request (``path`` may carry a query string); read it later."""
        if not path.startswith("/"):
            raise ValueError(f"a request path starts with '/', not {path!r}")
        self._quiet()
        path, _, query = path.partition("?")
        extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method.upper(),
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"testserver"), *extra],
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 50000),
        }
        communicator = ApplicationCommunicator(self.app, scope)
        await communicator.send_input({"type": "http.request", "body": body})
        request = InFlight(communicator)
        self._opened.append(request)
        return request

    async def get(self, path: str, timeout: float = TIMEOUT) -> Response:
        """A whole GET: send it and read the response."""
        return await (await self.open(path)).response(timeout)

    def _quiet(self) -> None:
        """Never touch the test process's signal handlers: before it starts, the lifecycle
        is made anew on the settings in force now, with HANDLE_SIGNALS off."""
        if self.lifecycle.phase == Phase.NEW:
            quiet = dataclasses.replace(get_settings(), HANDLE_SIGNALS=False)
            self.lifecycle = reset_lifecycle(settings=quiet)


def _hung_message(hung: list[Tracked]) -> str:
    lines = [f"{len(hung)} piece(s) of work did not stop at the shutdown:"]
    frames_by_thread = stacks.thread_frames()
    sync_calls = stacks.sync_calls(frames_by_thread)
    for item in hung:
        frames, _ = item.frames(frames_by_thread, sync_calls)
        where = stacks.innermost_project(frames)
        lines.append(f"  {item.describe()} at {where or '?'}")
    return "\n".join(lines)


def _abandon(hung: list[Tracked]) -> None:
    """End work that swallowed every cancel, as the process exit would, so that the test's
    event loop can close instead of waiting for it forever: the innermost coroutine of the
    project's own code is closed (its ``finally`` blocks run), and what awaited it ends
    with an error. Threads are daemons; code that also ignores ``GeneratorExit`` stays.
    """
    for item in hung:
        task = item.innermost_task
        if task is None or task.done():
            continue
        own = [
            frame
            for frame in stacks.await_chain(task.get_coro())
            if stacks.is_project_file(frame.f_code.co_filename)
        ]
        coroutine = _coroutine_of(task.get_coro(), own[-1]) if own else None
        if coroutine is None:
            continue
        task.add_done_callback(_retrieved)
        with contextlib.suppress(Exception):
            coroutine.close()
        task.cancel()


def _coroutine_of(awaitable: Any, frame: Any) -> Any:
    """The coroutine (or generator) in an await chain whose frame is ``frame``."""
    for _ in range(stacks.MAX_DEPTH):
        if awaitable is None:
            return None
        if (
            getattr(awaitable, "cr_frame", None) is frame
            or getattr(awaitable, "gi_frame", None) is frame
        ):
            return awaitable
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return None


def _retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def project_application() -> Any:
    """``ASGI_APPLICATION`` wrapped in :class:`GracefulASGI` (unless it already is)."""
    from django.utils.module_loading import import_string

    from .._cli.launch import asgi_application_path

    path = asgi_application_path()
    if path is None:
        from ..asgi import get_asgi_application

        return get_asgi_application()
    app = import_string(path.replace(":", "."))
    if isinstance(app, GracefulASGI):
        return GracefulASGI(app.app)  # the process lifecycle, whichever is current
    return GracefulASGI(app)
