"""Daphne adapter (to be filled from the server's source)."""

from __future__ import annotations

from types import ModuleType

from . import ServerAdapter


def running(modules: dict[str, ModuleType]) -> bool:
    return False


class Adapter(ServerAdapter):
    name = "daphne"
