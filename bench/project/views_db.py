"""The sync views of bench/request_cost.py, and what it reads of a server between rounds.

``sync_json`` is the async JSON view's answer from a sync view; ``pg`` runs one statement
on PostgreSQL (``BENCH_PG_APP``: see base.py). ``backends`` says how many database
connections this process has opened (Django's ``connection_created``), ``collect`` runs the
garbage collector: plain Django's connections, left behind by its thread per request
(Django ticket 33497), are closed only when collected, and PostgreSQL's connections are
few. Nothing here imports django_graceful.
"""

import gc
import threading
from typing import Any

from django.db import connection
from django.db.backends.signals import connection_created
from django.http import HttpRequest, JsonResponse

from .views import JSON_DATA

#: Database connections this process has opened (the lock: two threads may open one at once).
_opened = 0
_lock = threading.Lock()


def _created(sender: object, **kwargs: object) -> None:
    global _opened
    with _lock:
        _opened += 1


connection_created.connect(_created)


def _json(data: dict[str, Any]) -> JsonResponse:
    response = JsonResponse(data)
    response["Content-Length"] = str(len(response.content))
    return response


def sync_json(request: HttpRequest) -> JsonResponse:
    return _json(JSON_DATA)


#: The PostgreSQL view's answer.
PG_DATA = {"value": 1}


def pg(request: HttpRequest) -> JsonResponse:
    """One statement on the database (a persistent connection where the thread keeps it)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (value,) = cursor.fetchone()
    return _json({"value": value})


async def backends(request: HttpRequest) -> JsonResponse:
    return _json({"opened": _opened})


async def collect(request: HttpRequest) -> JsonResponse:
    return _json({"collected": gc.collect()})
