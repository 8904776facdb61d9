"""Views for ``checkshutdown --static`` (tests/test_staticscan.py): each bad pattern, and its fix.

Never served: the scan only reads this file. A ``# bad: LABEL`` comment marks a line the
scan must report (the tests find it by its label); ``clean_*`` views must give nothing.
"""

import asyncio
import contextlib
import itertools
import subprocess
import time
import urllib.request
from asyncio import CancelledError
from time import sleep as nap
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils.decorators import method_decorator
from django.views import View

from django_graceful import cancellable, current_cancellation

if TYPE_CHECKING:  # not installed for the tests: the scan resolves names from the source
    import requests

URL = "https://example.com/"


async def work() -> None:
    await asyncio.sleep(0)


# -- W003: swallowed cancellation ----------------------------------------------------


async def swallow_named(request: HttpRequest) -> HttpResponse:
    try:
        await work()
    except CancelledError:  # bad: swallow-named
        return HttpResponse("gave up")
    return HttpResponse("done")


async def swallow_base(request: HttpRequest) -> HttpResponse:
    while True:
        try:
            await work()
        except (ValueError, BaseException):  # bad: swallow-base
            continue


async def swallow_bare(request: HttpRequest) -> HttpResponse:
    try:
        await work()
    except:  # noqa: E722  # bad: swallow-bare
        pass
    return HttpResponse("done")


async def swallow_group(request: HttpRequest) -> HttpResponse:
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(work())
    except* asyncio.CancelledError:  # bad: swallow-group
        pass
    return HttpResponse("done")


async def swallow_suppress(request: HttpRequest) -> HttpResponse:
    with contextlib.suppress(asyncio.CancelledError):  # bad: swallow-suppress
        await work()
    return HttpResponse("done")


async def swallow_finally(request: HttpRequest) -> HttpResponse:
    try:
        await work()
    finally:
        return HttpResponse("done")  # noqa: B012  # bad: swallow-finally


async def clean_reraise(request: HttpRequest) -> HttpResponse:
    try:
        await work()
    except asyncio.CancelledError:
        await asyncio.sleep(0)  # cleanup may await once
        raise
    except BaseException as exc:
        raise RuntimeError("wrapped") from exc
    finally:
        pass
    return HttpResponse("done")


async def clean_except_exception(request: HttpRequest) -> HttpResponse:
    try:
        await work()
    except Exception:  # CancelledError is a BaseException: it goes through
        pass
    with contextlib.suppress(Exception):
        await work()
    try:
        value = int(request.GET.get("n", "1"))
    except:  # noqa: E722  (nothing awaited in the try: no cancel can land there)
        value = 1
    return HttpResponse(str(value))


# -- W004: blocking calls in async views ---------------------------------------------


async def blocks_sleep(request: HttpRequest) -> HttpResponse:
    time.sleep(1)  # noqa: ASYNC251  # bad: blocks-sleep
    nap(1)  # noqa: ASYNC251  # bad: blocks-nap
    return HttpResponse("done")


async def blocks_io(request: HttpRequest) -> HttpResponse:
    page = requests.get(URL, timeout=5)  # noqa: ASYNC210  # bad: blocks-requests
    with urllib.request.urlopen(URL) as reply:  # noqa: ASYNC210  # bad: blocks-urlopen
        body = reply.read()
    subprocess.run(["true"], check=True)  # noqa: ASYNC221  # bad: blocks-subprocess
    return HttpResponse(f"{page.status_code} {len(body)}")


async def clean_local_names(request: HttpRequest) -> HttpResponse:
    requests = {"a": 1}  # a local name, not the requests module
    time = request.GET  # nor this the time module
    return HttpResponse(f"{requests.get('a')} {time.get('sleep')}")


async def clean_offloaded(request: HttpRequest) -> HttpResponse:
    def fetch() -> bytes:
        with urllib.request.urlopen(URL) as reply:
            time.sleep(0.1)
            return reply.read()

    await asyncio.sleep(1)
    await asyncio.to_thread(time.sleep, 1)
    page = await sync_to_async(requests.get)(URL, timeout=5)
    body = await sync_to_async(fetch)()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: subprocess.run(["true"], check=True))
    return HttpResponse(f"{page.status_code} {len(body)}")


# -- W005: the sync ORM in async views -----------------------------------------------


async def sync_orm(request: HttpRequest) -> HttpResponse:
    group = Group.objects.get(name="a")  # bad: orm-get
    names = [g.name for g in Group.objects.all()]  # bad: orm-comprehension
    for other in Group.objects.filter(name__startswith="b"):  # bad: orm-for
        names.append(other.name)
    groups = Group.objects.exclude(name="c").order_by("name")
    total = len(groups)  # bad: orm-len
    first = groups.first()  # bad: orm-queryset-name
    found = get_object_or_404(Group, name="d")  # bad: orm-shortcut
    return HttpResponse(f"{group} {names} {total} {first} {found}")


async def clean_async_orm(request: HttpRequest) -> HttpResponse:
    count = await Group.objects.acount()
    group = await Group.objects.aget(name="a")
    groups = Group.objects.filter(name__startswith="b")  # lazy: no SQL yet
    names = [g.name async for g in groups]
    async for other in Group.objects.all():
        names.append(other.name)
    listed = await sync_to_async(list)(Group.objects.all())
    first = await sync_to_async(Group.objects.first)()
    created = await sync_to_async(lambda: Group.objects.get_or_create(name="e"))()
    rows = [1, 2]
    rows = await sync_to_async(list)(groups)  # a name that is not only a queryset
    return HttpResponse(f"{count} {group} {names} {listed} {first} {created} {len(rows)}")


# -- W006: sync views that run long and never look at their cancellation -------------


def long_sync(request: HttpRequest) -> HttpResponse:
    rows = 0
    for _ in range(int(request.GET.get("rows", "10000"))):  # bad: sync-for
        time.sleep(0.01)
        rows += 1
    return HttpResponse(str(rows))


def long_sync_related(request: HttpRequest) -> HttpResponse:
    names = []
    for group in request.user.groups.all():  # type: ignore[union-attr]  # bad: sync-related
        names.append(group.name)
    return HttpResponse(str(names))


@cancellable(timeout=5)
def long_sync_cancellable(request: HttpRequest) -> HttpResponse:
    """@cancellable cannot stop a thread: without a check, this runs to its end."""
    time.sleep(2)  # bad: sync-sleep
    while time.monotonic() < 0:
        pass
    return HttpResponse("done")


def clean_sync_checks(request: HttpRequest) -> HttpResponse:
    for _ in range(10000):
        request.cancellation.raise_if_cancelled()  # type: ignore[attr-defined]
        time.sleep(0.01)
    return HttpResponse("done")


@cancellable
def clean_sync_token(request: HttpRequest) -> HttpResponse:
    token = current_cancellation()
    while not token.cancelled:
        token.wait(0.1)
    return HttpResponse("stopped")


def long_sync_queryset(request: HttpRequest) -> HttpResponse:
    lines = []
    for group in Group.objects.order_by("name"):  # bad: sync-queryset
        lines.append(group.name)
    return HttpResponse("\n".join(lines))


def long_sync_iterator(request: HttpRequest) -> HttpResponse:
    everyone = Group.objects.all()
    lines = [str(everyone.query)]
    for group in everyone.iterator():  # bad: sync-iterator
        lines.append(group.name)
    return HttpResponse("\n".join(lines))


def long_sync_count(request: HttpRequest) -> HttpResponse:
    for n in itertools.count():  # bad: sync-count
        if n > 10:
            break
    return HttpResponse("counted")


def clean_trivial(request: HttpRequest) -> HttpResponse:
    for header in ("a", "b"):  # a literal: bounded and short
        request.META.get(header)
    for _ in range(3):
        pass
    for key, value in request.POST.items():  # the request's own data: bounded too
        request.META.get(key, value)
    return HttpResponse("<h1>hello</h1>")


def clean_ordinary_loops(request: HttpRequest) -> HttpResponse:
    """What ordinary views loop over: a slice, a dict, a list built here, a form."""
    names = []
    for group in Group.objects.all()[:20]:
        names.append(group.name)
    latest = Group.objects.order_by("-id")[:5]
    for group in latest:
        names.append(group.name)
    counts = {"a": 1, "b": 2}
    for key, value in counts.items():
        names.append(f"{key}={value}")
    for name in sorted(names):
        names.append(name.upper())
    return HttpResponse(", ".join(names))


class CleanSyncMethod(View):
    def post(self, req: HttpRequest) -> HttpResponse:
        fields = [name for name in req.POST]  # a comprehension is not a loop statement
        for name in req.POST.getlist("names"):
            fields.append(name)
        return HttpResponse(str(fields))


# -- class-based views ---------------------------------------------------------------


class BadClass(View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        time.sleep(1)  # noqa: ASYNC251  # bad: class-get
        return HttpResponse("done")


@method_decorator(cancellable(timeout=1), name="dispatch")
class BadDecorated(View):
    @method_decorator(cancellable(timeout=2))
    async def post(self, request: HttpRequest) -> HttpResponse:
        try:
            await work()
        except BaseException:  # bad: class-post
            pass
        return HttpResponse("done")


class CleanClass(View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(1)
        return HttpResponse("done")

    async def put(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("put")


class CleanSyncClass(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("get")


# -- suppressed ----------------------------------------------------------------------


async def clean_ignored_line(request: HttpRequest) -> HttpResponse:
    time.sleep(0.01)  # noqa: ASYNC251  # graceful: ignore
    time.sleep(0.01)  # noqa: ASYNC251  # graceful: ignore[W004]
    return HttpResponse("done")


async def clean_ignored_view(request: HttpRequest) -> HttpResponse:  # graceful: ignore
    time.sleep(0.01)  # noqa: ASYNC251
    return HttpResponse("done")


async def ignored_other_id(request: HttpRequest) -> HttpResponse:
    time.sleep(0.01)  # noqa: ASYNC251  # graceful: ignore[W003]  # bad: ignored-other-id
    return HttpResponse("done")


class CleanIgnoredClass(View):  # graceful: ignore
    async def get(self, request: HttpRequest) -> HttpResponse:
        time.sleep(0.01)  # noqa: ASYNC251
        return HttpResponse("done")
