"""Print pip constraints that pin every requirement of pyproject.toml to its floor.

    python scripts/_floors.py test > floors.txt   # the dependencies and the `test` extra
    pip install -c floors.txt -e '.[test]'

Each requirement's lower bound (``>=X``) becomes ``==X``, for the package's dependencies
and the extras named (followed through ``django-graceful-asgi[...]``), so the floor
line of scripts/test installs exactly the oldest releases pyproject.toml allows: a floor
cannot claim a release the tests never ran. A requirement without a ``>=`` bound is left
unpinned; its environment marker is kept. Standard library only (Python >= 3.11).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

#: name[extras] specifiers ; marker
REQUIREMENT = re.compile(
    r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*([^;]*?)\s*(?:;(.*))?$"
)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def floors(project: dict, extras: list[str]) -> dict[str, str]:
    """{normalized name: constraint line} for the dependencies and ``extras``."""
    own = normalized(project["name"])
    optional = project.get("optional-dependencies", {})
    pins: dict[str, str] = {}
    seen: set[str] = set()
    pending = [*project.get("dependencies", [])]
    for extra in extras:
        pending.append(f"{own}[{extra}]")
    while pending:
        line = pending.pop(0)
        match = REQUIREMENT.match(line)
        if match is None:
            raise SystemExit(f"cannot read requirement {line!r}")
        name, extra_names, specifiers, marker = match.groups()
        if normalized(name) == own:
            for extra in (e.strip() for e in (extra_names or "").split(",") if e.strip()):
                if extra not in seen:
                    seen.add(extra)
                    if extra not in optional:
                        raise SystemExit(f"pyproject.toml has no extra {extra!r}")
                    pending.extend(optional[extra])
            continue
        lower = [s.strip()[2:].strip() for s in specifiers.split(",") if s.strip().startswith(">=")]
        if not lower:
            continue
        pin = f"{normalized(name)}=={lower[0]}" + (f"; {marker.strip()}" if marker else "")
        previous = pins.setdefault(normalized(name), pin)
        if previous != pin:
            raise SystemExit(f"two floors for {name}: {previous!r} and {pin!r}")
    return pins


def main(argv: list[str]) -> None:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    for pin in sorted(floors(project, argv).values()):
        print(pin)


if __name__ == "__main__":
    main(sys.argv[1:])
