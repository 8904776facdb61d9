"""GracefulASGI without GracefulMiddleware (bench/cancel.py's baseline for the overhead)."""

from .settings_cancel import *  # noqa: F403

MIDDLEWARE: list[str] = []
