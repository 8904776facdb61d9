"""django_graceful's bench settings under Daphne's ``runserver`` (bench/reload_runserver.py)."""

from . import runserver
from .settings import *  # noqa: F403
from .settings import INSTALLED_APPS

INSTALLED_APPS = [*runserver.APPS, *INSTALLED_APPS]
ASGI_APPLICATION = runserver.ASGI_APPLICATION_GRACEFUL
ROOT_URLCONF = runserver.ROOT_URLCONF
LOGGING = runserver.LOGGING
