"""The ``GRACEFUL`` settings: defaults, validation and one read per process."""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings as django_settings
from django.core.checks import Error
from django.utils.module_loading import import_string

#: Durations in seconds, with their defaults.
DURATIONS: dict[str, float] = {
    "DRAIN_DELAY": 0.0,
    "GRACE_PERIOD": 20.0,
    "CANCEL_TIMEOUT": 5.0,
    "HOOK_TIMEOUT": 5.0,
    "HEARTBEAT": 1.0,
    "HANG_THRESHOLD": 30.0,
}
STATE_BACKENDS = ("file", "cache")
#: Switches, with the check id and hint of a value that is not a bool.
BOOLEANS: dict[str, tuple[str, str]] = {
    "HANDLE_SIGNALS": (
        "graceful.E006",
        "Write HANDLE_SIGNALS: False to leave SIGTERM/SIGINT to the server alone.",
    ),
    "REDACT_PATHS": (
        "graceful.E009",
        "Write REDACT_PATHS: True to name requests by their URL route, not their path, "
        "in logs, snapshots and shutdown reports.",
    ),
    "REUSE_SYNC_THREADS": (
        "graceful.E010",
        "Write REUSE_SYNC_THREADS: True (the default: each request's sync code on a "
        "reused thread) or False (a thread started for each request, as Django does).",
    ),
}
KNOWN_KEYS = frozenset(
    [
        *DURATIONS,
        *BOOLEANS,
        "LIFESPAN",
        "STATE_BACKEND",
        "STATE_DIR",
        "STATE_CACHE",
        "IDLE_SYNC_THREADS",
    ]
)
#: Durations that must be strictly positive (a zero heartbeat would spin).
POSITIVE = frozenset({"HEARTBEAT"})


def default_state_dir() -> str:
    """A per-user, per-project folder, stable across workers, that another user cannot
    guess: under ``XDG_RUNTIME_DIR`` when set (private to the user), else under the
    system temp dir; its name is keyed with the project's ``SECRET_KEY``."""
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    if not os.path.isabs(base) or not os.path.isdir(base):
        base = tempfile.gettempdir()
    digest = project_id(os.getcwd())
    return os.path.join(base, f"django-graceful-{os.getuid()}-{digest}")


def project_id(*parts: str) -> str:
    """A short id of this project (its settings module, keyed with ``SECRET_KEY``, and
    ``parts``): the same in every worker and host that share the settings, different
    for another project, and not to be guessed without the secret."""
    from django.utils.crypto import salted_hmac

    module = os.environ.get("DJANGO_SETTINGS_MODULE", "django")
    value = ":".join([module, *parts])
    try:
        return salted_hmac("django_graceful.state", value, algorithm="sha256").hexdigest()[:16]
    except Exception:  # no SECRET_KEY (settings not configured): predictable, still per project
        return hashlib.sha256(value.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class GracefulSettings:
    DRAIN_DELAY: float = DURATIONS["DRAIN_DELAY"]
    GRACE_PERIOD: float = DURATIONS["GRACE_PERIOD"]
    CANCEL_TIMEOUT: float = DURATIONS["CANCEL_TIMEOUT"]
    HOOK_TIMEOUT: float = DURATIONS["HOOK_TIMEOUT"]
    HEARTBEAT: float = DURATIONS["HEARTBEAT"]
    HANG_THRESHOLD: float = DURATIONS["HANG_THRESHOLD"]
    LIFESPAN: tuple[str, ...] = ()
    HANDLE_SIGNALS: bool = True
    STATE_BACKEND: str = "file"
    STATE_DIR: str = field(default_factory=default_state_dir)
    STATE_CACHE: str = "default"
    #: Name requests by their URL route (``GET /orders/<int:id>/``), never their path.
    REDACT_PATHS: bool = False
    #: Run each request's sync code on a thread reused from request to request
    #: (``_serving/threads.py``), not on one asgiref starts and joins per request.
    REUSE_SYNC_THREADS: bool = True
    #: Idle reused threads kept for the next requests; a thread that comes back to a full
    #: pool ends (after a burst, the pool shrinks back to this).
    IDLE_SYNC_THREADS: int = 8


def raw_settings() -> Any:
    return getattr(django_settings, "GRACEFUL", {})


def validate(raw: Any) -> list[Error]:
    """Every problem with a ``GRACEFUL`` value, as Django check errors."""
    if not isinstance(raw, dict):
        return [
            Error(
                f"GRACEFUL must be a dict, not {type(raw).__name__}.",
                hint="Set GRACEFUL = {'GRACE_PERIOD': 20, ...} in settings.py.",
                id="graceful.E001",
            )
        ]
    errors: list[Error] = []
    for key in sorted(set(raw) - KNOWN_KEYS, key=str):
        errors.append(
            Error(
                f"GRACEFUL has an unknown key {key!r}.",
                hint=f"Known keys: {', '.join(sorted(KNOWN_KEYS))}.",
                id="graceful.E002",
            )
        )
    for key in DURATIONS:
        if key not in raw:
            continue
        value = raw[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            errors.append(
                Error(
                    f"GRACEFUL[{key!r}] must be a number of seconds, not {value!r}.",
                    hint="Use an int or float, e.g. 5 or 0.5.",
                    id="graceful.E003",
                )
            )
        elif value < 0 or (key in POSITIVE and value == 0):
            bound = "greater than 0" if key in POSITIVE else "0 or more"
            errors.append(
                Error(
                    f"GRACEFUL[{key!r}] must be {bound} seconds, not {value!r}.",
                    hint="Durations are seconds from the shutdown signal; they cannot be negative.",
                    id="graceful.E004",
                )
            )
    idle = raw.get("IDLE_SYNC_THREADS", 0)
    if isinstance(idle, bool) or not isinstance(idle, int) or idle < 0:
        errors.append(
            Error(
                f"GRACEFUL['IDLE_SYNC_THREADS'] must be a whole number, 0 or more, not {idle!r}.",
                hint="How many idle threads REUSE_SYNC_THREADS keeps for the next requests, "
                "e.g. 8.",
                id="graceful.E011",
            )
        )
    errors.extend(_validate_lifespan(raw.get("LIFESPAN", [])))
    errors.extend(_validate_state(raw))
    for key, (error_id, hint) in BOOLEANS.items():
        if key in raw and not isinstance(raw[key], bool):
            errors.append(
                Error(
                    f"GRACEFUL[{key!r}] must be True or False, not {raw[key]!r}.",
                    hint=hint,
                    id=error_id,
                )
            )
    return errors


def _validate_lifespan(paths: Any) -> list[Error]:
    if isinstance(paths, str) or not isinstance(paths, list | tuple):
        return [
            Error(
                f"GRACEFUL['LIFESPAN'] must be a list of dotted paths, not {paths!r}.",
                hint="e.g. LIFESPAN: ['myproject.lifespan.db_pool'].",
                id="graceful.E005",
            )
        ]
    errors = []
    for path in paths:
        try:
            if not isinstance(path, str):
                raise ImportError(f"{path!r} is not a dotted path string")
            target = import_string(path)
            if not callable(target):
                raise ImportError(f"{path} is not callable")
        except ImportError as exc:
            errors.append(
                Error(
                    f"GRACEFUL['LIFESPAN'] entry {path!r} cannot be imported: {exc}",
                    hint="Each entry is the dotted path of an async context manager "
                    "factory taking the ASGI app, e.g. decorated with "
                    "@contextlib.asynccontextmanager.",
                    id="graceful.E005",
                )
            )
    return errors


def _validate_state(raw: dict[str, Any]) -> list[Error]:
    errors = []
    backend = raw.get("STATE_BACKEND", "file")
    if backend not in STATE_BACKENDS:
        errors.append(
            Error(
                f"GRACEFUL['STATE_BACKEND'] must be 'file' or 'cache', not {backend!r}.",
                hint="'file' writes to STATE_DIR; 'cache' uses the Django cache STATE_CACHE.",
                id="graceful.E007",
            )
        )
    for key in ("STATE_DIR", "STATE_CACHE"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key]):
            errors.append(
                Error(
                    f"GRACEFUL[{key!r}] must be a non-empty string, not {raw[key]!r}.",
                    hint="STATE_DIR is a folder path; STATE_CACHE a key of CACHES.",
                    id="graceful.E008",
                )
            )
    if backend == "cache" and not errors:
        alias = raw.get("STATE_CACHE", "default")
        if alias not in getattr(django_settings, "CACHES", {"default": {}}):
            errors.append(
                Error(
                    f"GRACEFUL['STATE_CACHE'] names the cache {alias!r}, which is not in CACHES.",
                    hint="Add it to CACHES or set STATE_CACHE to an existing alias.",
                    id="graceful.E008",
                )
            )
    return errors


class ImproperlyConfiguredGraceful(Exception):
    """Raised when GRACEFUL is read at runtime with values the checks reject."""


_cache: GracefulSettings | None = None


def get_settings() -> GracefulSettings:
    """The validated settings, read once per process (``reset()`` re-reads)."""
    global _cache
    if _cache is None:
        raw = raw_settings()
        errors = validate(raw)
        if errors:
            raise ImproperlyConfiguredGraceful("; ".join(f"{e.id}: {e.msg}" for e in errors))
        _cache = settings_from(raw)
    return _cache


def settings_from(raw: dict[str, Any]) -> GracefulSettings:
    """The settings of a ``GRACEFUL`` dict that :func:`validate` passed, the defaults
    where it is silent: durations as floats, ``LIFESPAN`` as a tuple."""
    default = GracefulSettings()

    def seconds(key: str) -> float:
        return float(raw.get(key, DURATIONS[key]))

    return GracefulSettings(
        DRAIN_DELAY=seconds("DRAIN_DELAY"),
        GRACE_PERIOD=seconds("GRACE_PERIOD"),
        CANCEL_TIMEOUT=seconds("CANCEL_TIMEOUT"),
        HOOK_TIMEOUT=seconds("HOOK_TIMEOUT"),
        HEARTBEAT=seconds("HEARTBEAT"),
        HANG_THRESHOLD=seconds("HANG_THRESHOLD"),
        LIFESPAN=tuple(raw.get("LIFESPAN", default.LIFESPAN)),
        HANDLE_SIGNALS=raw.get("HANDLE_SIGNALS", default.HANDLE_SIGNALS),
        STATE_BACKEND=raw.get("STATE_BACKEND", default.STATE_BACKEND),
        STATE_DIR=raw.get("STATE_DIR", default.STATE_DIR),
        STATE_CACHE=raw.get("STATE_CACHE", default.STATE_CACHE),
        REDACT_PATHS=raw.get("REDACT_PATHS", default.REDACT_PATHS),
        REUSE_SYNC_THREADS=raw.get("REUSE_SYNC_THREADS", default.REUSE_SYNC_THREADS),
        IDLE_SYNC_THREADS=raw.get("IDLE_SYNC_THREADS", default.IDLE_SYNC_THREADS),
    )


def reset(**_: Any) -> None:
    """Forget the cached settings (connected to Django's ``setting_changed``)."""
    global _cache
    _cache = None
