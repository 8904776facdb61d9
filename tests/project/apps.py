from django.apps import AppConfig


class TestProjectConfig(AppConfig):
    name = "tests.project"
    label = "testproject"

    def ready(self) -> None:
        from . import hooks  # noqa: F401
