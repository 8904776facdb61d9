"""The Django app: system checks, settings re-read in tests, SQL interrupts, snapshots,
connections left clean at the end of each request."""

from django.apps import AppConfig


class GracefulConfig(AppConfig):
    name = "django_graceful"
    verbose_name = "Graceful ASGI"

    def ready(self) -> None:
        from django.core import checks
        from django.core.signals import setting_changed

        from . import checks as graceful_checks
        from ._cancel import sql
        from ._core.lifecycle import get_lifecycle
        from ._diagnosis import publisher
        from ._serving.threads import attend_request_ends
        from .adapters.daphne import guard_reloader
        from .conf import reset

        checks.register(graceful_checks.check_settings)
        checks.register(graceful_checks.check_asgi_entrypoint)
        checks.register(graceful_checks.check_state_cache)
        checks.register(graceful_checks.check_views, checks.Tags.urls)
        setting_changed.connect(reset, dispatch_uid="django_graceful.conf.reset")
        attend_request_ends(True)
        sql.install()
        publisher.install()
        guard_reloader(lambda: get_lifecycle().budget())
