"""What every driver does the same way: read the server's version, say whether it is
one whose internals the driver's probe knows, and fall back to the generic driver with
one warning when something is not where expected."""

from __future__ import annotations

import importlib.metadata
import logging
import re

logger = logging.getLogger("django_graceful")

Version = tuple[int, ...]


def installed_version(distribution: str) -> Version | None:
    """The installed version of ``distribution`` as numbers (``(0, 54, 0)``), or None."""
    try:
        text = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    return parse_version(text)


def parse_version(text: str) -> Version | None:
    """``"2.8.7"`` -> ``(2, 8, 7)``; the numbers before any pre-release tag."""
    numbers = re.match(r"\d+(?:\.\d+)*", text.strip())
    return tuple(int(part) for part in numbers.group(0).split(".")) if numbers else None


def shown(version: Version | None) -> str:
    return ".".join(map(str, version)) if version else "unknown"


def version_problem(
    server: str, version: Version | None, minimum: Version, below: Version | None = None
) -> str | None:
    """Why ``version`` is not one the probe knows (``minimum <= version < below``), or None."""
    if version is None:
        return f"{server}'s version could not be read"
    if version < minimum:
        return f"{server} {shown(version)} is older than {shown(minimum)}"
    if below is not None and version >= below:
        return f"{server} {shown(version)} is newer than this driver knows (< {shown(below)})"
    return None


def fall_back(server: str, problem: str, consequence: str) -> None:
    """The one warning a driver gives when it cannot engage and the generic driver
    takes over: what is wrong, and what the server will then do on its own."""
    logger.warning(
        "%s driver not engaged (%s): using the generic driver; %s", server, problem, consequence
    )
