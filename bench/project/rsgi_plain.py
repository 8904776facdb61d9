"""Plain Django on RSGI through django-rsgi (Python >= 3.12, Django >= 6.0), for comparison."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.project.settings_plain")

from django_rsgi import get_rsgi_application

application = get_rsgi_application()
