"""Plain Django with the URLs of bench/cancel.py (its baseline for the cancel latency)."""

from .settings_plain import *  # noqa: F403

ROOT_URLCONF = "bench.project.urls_cancel"
