"""What the static scan reports: the kinds of finding, their ids, why each matters, the fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..._core.stacks import short_path

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
