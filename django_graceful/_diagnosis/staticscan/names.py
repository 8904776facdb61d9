"""The names the checks know: blocking calls, the ORM's methods, cancellation, offloading."""

from __future__ import annotations

#: The HTTP functions of ``requests`` and ``httpx``.
HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options", "request")
_IN_A_THREAD = "or await asyncio.to_thread({name}, ...)."
#: Calls that block the thread they run in, by dotted name, with the fix for an async view.
BLOCKING_CALLS: dict[str, str] = {
    "time.sleep": "Use await asyncio.sleep(...).",
    **{
        f"requests.{method}": "Use an async client (httpx.AsyncClient), " + _IN_A_THREAD
        for method in HTTP_METHODS
    },
    **{
        f"httpx.{method}": "Use httpx.AsyncClient, " + _IN_A_THREAD
        for method in (*HTTP_METHODS, "stream")
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
#: Django shortcuts that run the sync ORM.
SHORTCUTS = frozenset({"django.shortcuts.get_object_or_404", "django.shortcuts.get_list_or_404"})
#: Builtins that evaluate the queryset they are given.
EVALUATING_BUILTINS = frozenset(
    {"list", "tuple", "set", "frozenset", "dict", "len", "sorted", "bool", "sum", "min", "max"}
)
#: What an ``except`` may name to catch the cancellation (a bare ``except:`` does too).
CANCEL_EXCEPTIONS = frozenset(
    {
        "asyncio.CancelledError",
        "asyncio.exceptions.CancelledError",
        "BaseException",
        "builtins.BaseException",
    }
)
#: Call names (their last part) that run their argument elsewhere: a thread, an executor.
OFFLOADERS = frozenset(
    {"sync_to_async", "database_sync_to_async", "to_thread", "run_in_executor", "submit"}
)
#: Names whose presence in a sync view means it looks at its cancellation.
CANCEL_WORDS = frozenset(
    {"cancellation", "current_cancellation", "raise_if_cancelled", "cancelled", "is_shutting_down"}
)
#: Queryset methods whose result a ``for`` loop iterates row by row (W006).
ORM_ITERATING = ORM_LAZY | {"iterator"}
#: Iterators that never end by themselves (W006).
ENDLESS = frozenset({"itertools.count", "itertools.cycle", "itertools.repeat"})
