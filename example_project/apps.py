"""Example app: connects the startup/shutdown hooks when Django is ready."""

from django.apps import AppConfig


class ExampleConfig(AppConfig):
    name = "example_project"

    def ready(self) -> None:
        from . import hooks  # noqa: F401
