"""The public decorators keep the decorated function's type (checked by mypy in test_typing);
``endless()`` returns the response it marks, as its own type.

Every ``assert_type`` here fails under mypy if a decorator erases the type to ``Any`` or
changes it; every ``# type: ignore[code]`` marks a call mypy must reject, and becomes an
"unused ignore" error if the decorated function's parameters stop being checked. At run
time ``assert_type`` does nothing: test_typing imports this module (registering two hooks,
which it disconnects) and awaits ``decorated_functions_keep_their_types``.
"""

from __future__ import annotations

from typing import assert_type

from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from django_graceful import CancelReason, cancellable, endless, on_shutdown, on_startup


# --- @cancellable, bare ---------------------------------------------------------------
@cancellable
async def async_view(request: HttpRequest, pk: int) -> JsonResponse:
    return JsonResponse({"pk": pk})


@cancellable
def sync_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


# --- @cancellable(...), with options ---------------------------------------------------
async def cleanup(request: HttpRequest, reason: CancelReason) -> None:
    pass


def gateway_timeout(request: HttpRequest) -> HttpResponse:
    return HttpResponse(status=504)


@cancellable(timeout=2.5, on_cancel=cleanup, timeout_response=gateway_timeout)
async def async_view_with_options(request: HttpRequest, slug: str) -> HttpResponse:
    return HttpResponse(slug)


@cancellable(timeout=1)
def sync_view_with_options(request: HttpRequest, *, page: int = 1) -> JsonResponse:
    return JsonResponse({"page": page})


# --- @on_startup / @on_shutdown, bare and with timeout= ---------------------------------
@on_startup
async def open_pool() -> None:
    pass


@on_shutdown(timeout=3)
def flush() -> int:
    return 0


HOOKS = [("on_startup", open_pool), ("on_shutdown", flush)]


async def decorated_functions_keep_their_types(request: HttpRequest) -> None:
    """Awaited by test_typing at run time too, so every call here really works."""
    assert_type(await async_view(request, 1), JsonResponse)
    assert_type(sync_view(request), HttpResponse)
    assert_type(await async_view_with_options(request, "a"), HttpResponse)
    assert_type(sync_view_with_options(request, page=2), JsonResponse)
    assert_type(await open_pool(), None)
    assert_type(flush(), int)
    assert_type(endless(StreamingHttpResponse(iter([b"x"])), last="x"), StreamingHttpResponse)
    assert_type(endless(FileResponse(iter([b"x"])), False), FileResponse)


async def calls_mypy_must_reject(request: HttpRequest) -> None:
    """Never called: wrong calls that only a checker which kept the types catches."""
    sync_view(request, 1)  # type: ignore[call-arg]
    await async_view(request, "1")  # type: ignore[arg-type]
    await async_view_with_options(request)  # type: ignore[call-arg]
    sync_view_with_options(request, page="2")  # type: ignore[arg-type]
    await open_pool(1)  # type: ignore[call-arg]
    flush() + "s"  # type: ignore[operator]
    cancellable(timeout="5")  # type: ignore[call-overload]
    on_shutdown(timeout=1)(sync_view)  # type: ignore[type-var]
    endless(HttpResponse("x"))  # type: ignore[type-var]
    endless(StreamingHttpResponse(), last=1)  # type: ignore[arg-type]
