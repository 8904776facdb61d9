"""The test project's app, plus a shutdown hook only the server process registers (a
server imports asgi.py; ``manage.py`` does not): a drill must count it in the budget."""

from django_graceful import on_shutdown

from .asgi import application

__all__ = ["application"]


@on_shutdown(timeout=4)
def flush_late() -> None:
    """Quick in fact: only its timeout counts, in the budget."""
