"""Fast tests run in-process against the test project; ``-m server`` ones start real servers."""

import os

import django
import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")
django.setup()


@pytest.fixture
def lifecycle():
    """A fresh process lifecycle for one test."""
    from django_graceful.lifecycle import reset_lifecycle

    fresh = reset_lifecycle()
    yield fresh
    reset_lifecycle()
