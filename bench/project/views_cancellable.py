"""The same views under ``@cancellable``: the hello world, and the wait whose on_cancel reports."""

from django.http import HttpRequest

from django_graceful._cancel.decorators import cancellable
from django_graceful._core.cancellation import CancelReason

from . import views, views_cancel


async def report_cancel(request: HttpRequest, reason: CancelReason) -> None:
    views_cancel.probe("on_cancel", request, str(reason))


hello = cancellable(views.hello)
wait = cancellable(on_cancel=report_cancel)(views_cancel.wait)
