"""One assertion that is wrong on purpose: test_typing checks that mypy reports it.

It proves that mypy really checked the files (a run that checked nothing would pass)
and that it saw the decorated view's own type: were the type erased, mypy would say
``Expression is of type "Any"`` instead.
"""

from __future__ import annotations

from typing import assert_type

from django.http import HttpRequest

from .decorated import sync_view


def wrong(request: HttpRequest) -> None:
    assert_type(sync_view(request), int)  # wrong on purpose: it is an HttpResponse
