"""A sync view that reports the per-thread and per-request state it finds, then leaves
its own behind, as a careless view would: what the next request on its thread sees."""

import datetime
import threading

from django.core.cache import caches
from django.db import connections, transaction
from django.http import HttpRequest, JsonResponse
from django.urls import get_script_prefix, get_urlconf, set_script_prefix, set_urlconf
from django.utils import timezone, translation

from .events import record

#: A thread-local of the user's own: the same object on a thread from request to request.
USER_LOCAL = threading.local()
#: What a request leaves activated: not settings' LANGUAGE_CODE, TIME_ZONE, ROOT_URLCONF.
LEFT_LANGUAGE = "fr"
LEFT_TIMEZONE = datetime.timezone(datetime.timedelta(hours=9), "UTC+09")
LEFT_URLCONF = "tests.project.urls_hangs"
LEFT_SCRIPT_PREFIX = "/left/"
#: The event of a commit hook that a request registered in a transaction it never left:
#: that transaction is rolled back, so the hook must never run.
LEFT_HOOK_RAN = "left-commit-hook-ran"


def found_and_left(request: HttpRequest) -> JsonResponse:
    """What this request finds on its thread and in its context (then a transaction of its
    own on ``?db=``, durable: it would fail on an atomic block left over, and run a commit
    hook left over), and what it leaves: markers
    named ``?leave=``, an activated language, time zone, URLconf and script prefix, and
    with ``?left=atomic`` an atomic block (with a savepoint, a commit hook and a rollback
    mark) it never leaves, with ``?left=autocommit`` autocommit turned off."""
    alias = request.GET.get("db", "default")
    connection = connections[alias]
    found = {
        "thread": threading.current_thread().name,
        "language": translation.get_language(),
        "timezone": timezone.get_current_timezone_name(),
        "urlconf": get_urlconf(),
        "script_prefix": get_script_prefix(),
        "cache": getattr(caches["default"], "left_by", None),
        "user_local": getattr(USER_LOCAL, "left_by", None),
        "connection": getattr(connection, "left_by", None),
        "connected": connection.connection is not None,
        "in_atomic_block": connection.in_atomic_block,
        "needs_rollback": connection.needs_rollback,
        "savepoints": len(connection.savepoint_ids),
        "commit_hooks": len(connection.run_on_commit),
    }
    backend = "SELECT pg_backend_pid()" if connection.vendor == "postgresql" else "SELECT 1"
    with transaction.atomic(using=alias, durable=True), connection.cursor() as cursor:
        cursor.execute(backend)
        (found["backend"],) = cursor.fetchone()
    found["autocommit"] = connection.get_autocommit()

    left_by = request.GET["leave"]
    translation.activate(LEFT_LANGUAGE)
    timezone.activate(LEFT_TIMEZONE)
    set_urlconf(LEFT_URLCONF)
    set_script_prefix(LEFT_SCRIPT_PREFIX)
    caches["default"].left_by = left_by  # type: ignore[attr-defined]
    USER_LOCAL.left_by = left_by
    connection.left_by = left_by  # type: ignore[attr-defined]
    left = request.GET.get("left")
    if left == "atomic":
        transaction.atomic(using=alias).__enter__()
        transaction.atomic(using=alias).__enter__()  # and a savepoint in it
        transaction.on_commit(lambda: record(LEFT_HOOK_RAN, by=left_by), using=alias)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        transaction.set_rollback(True, using=alias)
    elif left == "autocommit":
        transaction.set_autocommit(False, using=alias)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    return JsonResponse(found)
