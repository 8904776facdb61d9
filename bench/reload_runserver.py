"""How long a reload takes under Daphne's ``runserver`` (Channels' development setup): plain
Django vs django_graceful, idle and while a client holds an event stream open.

Both variants run at once, each ``python -m django runserver`` with ``daphne`` first in
INSTALLED_APPS and Django's autoreloader (StatReloader), each watching a file of its own.
Each round touches one variant's file, then asks ``/pid/`` every ``POLL`` s until a new
process answers; the variants take turns (``rotation``). Per variant it reports, in seconds:

- *touch → answer*: from touching the file to the new process's first answer (what a
  developer waits for; the reloader looks at the files once a second, so this spreads
  over about a second whatever the server does);
- *seen → answer*: from the reloader's "changed, reloading." line (its own clock) to that
  answer: the old process's stop and the new one's start, without the reloader's tick;
- *seen → old process gone*: from that line to the old process's end (its stop alone);
- *gone → answer*: from there to the new process's first answer (its start alone:
  Python, Django's setup and checks, and django_graceful's startup at the first request).

then the ratio and the difference of the means (django_graceful / plain, and minus).

Two cases, taking turns too: *idle*, and *open EventSource*, where a client holds
``/events/`` (server-sent events with no end of their own, a tick a second) open from
before the touch; it reports how that stream ended (a terminated body, or a cut
connection) and each variant's difference against idle (the goal: within 0.5 s).

The benchmark asks ``/pid/`` only once the old process is gone: a connection sent while
it stops waits for the next process (django_graceful shuts the door at the stop: the
kernel drops its SYN, and the client's retry comes a second later), which is a client's
retry, not the reload's time. django_graceful and the bench project are imported from
bytecode compiled before the run (``compileall``), as after a ``pip install``: where
``PYTHONDONTWRITEBYTECODE`` is set, each new process would compile them from source.

Run: ``.venvs/py313/bin/python bench/reload_runserver.py [--rounds 8]``
"""

from __future__ import annotations

import compileall
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path: the repository instead.
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from bench.harness import (  # noqa: E402
    LABELS,
    RESULTS,
    EventSource,
    Server,
    arguments,
    begin,
    http_get,
    log,
    machine,
    publish,
    rotation,
    source_state,
    versions,
)

#: variant -> the settings that run it under Daphne's runserver.
SETTINGS = {
    "plain": "bench.project.settings_runserver_plain",
    "graceful": "bench.project.settings_runserver",
}
#: How often the benchmark asks whether the new process answers.
POLL = 0.01
#: The most a reload may take before the round counts as failed.
RELOAD_TIMEOUT = 30.0
#: The reloader's line, with the time (``%(created)``) the change was seen.
SEEN = re.compile(r"^(\d+\.\d+) INFO django\.utils\.autoreload: .* changed, reloading\.$", re.M)


class Runserver(Server):
    """Daphne's ``runserver`` with the autoreloader, on the bench project's ``variant``."""

    def __init__(self, variant: str, folder: Path) -> None:
        self.reload_file = folder / f"reload-{variant}.txt"
        self.reload_file.write_text("")
        super().__init__(
            "daphne",
            variant,
            log_path=RESULTS / f"reload_runserver-{variant}.log",
            env={
                "DJANGO_SETTINGS_MODULE": SETTINGS[variant],
                "BENCH_RELOAD_FILE": str(self.reload_file),
            },
        )
        self.cmd = [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{self.port}"]

    def pid(self) -> int | None:
        """The pid of the process that answers, or None (not listening, 503, ...)."""
        reply = http_get(self.port, "/pid/", timeout=2.0)
        if reply.status != 200:
            return None
        match = re.search(rb'"pid": (\d+)', reply.content)
        return int(match.group(1)) if match else None

    def wait_pid(self, other_than: int | None, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.pid()
            if pid is not None and pid != other_than:
                return pid
            time.sleep(POLL)
        raise RuntimeError(f"{self.variant}: no new process within {timeout:g} s:\n{self.tail()}")

    def seen_times(self) -> list[float]:
        return [float(t) for t in SEEN.findall(self.log_path.read_text(errors="replace"))]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def watch_exit(pid: int, gone: list[float]) -> None:
    """Record when process ``pid`` (the old server, reaped by the reloader) is gone."""
    while alive(pid):
        time.sleep(POLL / 5)
    gone.append(time.time())


#: case -> its title; "events": a client holds an event stream open across the reload.
CASES = {"idle": "idle", "events": "open EventSource"}


def reload_once(server: Runserver, case: str) -> tuple[float, float, float, str]:
    """(touch → answer, seen → answer, seen → old process gone, how the stream ended) of
    one reload."""
    old = server.wait_pid(None, RELOAD_TIMEOUT)
    seen_before = len(server.seen_times())
    time.sleep(1.0)  # not within the reloader's first look at the file's time
    stream = EventSource(server.port, RELOAD_TIMEOUT) if case == "events" else None
    if stream is not None and not (stream.wait_open(RELOAD_TIMEOUT)):
        raise RuntimeError(f"{server.variant}: /events/ sent nothing:\n{server.tail()}")
    gone: list[float] = []
    watcher = threading.Thread(target=watch_exit, args=(old, gone), daemon=True)
    watcher.start()
    touched = time.time()
    server.reload_file.write_text(str(touched))
    # Asked once the old process is gone: a connection sent while it stops waits for the
    # next one (the door shut at the stop), a client's retry, not the reload's time.
    watcher.join(RELOAD_TIMEOUT)
    server.wait_pid(old, RELOAD_TIMEOUT)
    answered = time.time()
    seen = server.seen_times()
    if len(seen) <= seen_before or not gone:
        raise RuntimeError(f"{server.variant}: no 'changed, reloading.' line:\n{server.tail()}")
    ending = "-" if stream is None else stream.ending(RELOAD_TIMEOUT)
    return answered - touched, answered - seen[seen_before], gone[0] - seen[seen_before], ending


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    began = begin()
    for package in ("django_graceful", "bench"):  # see below
        compileall.compile_dir(ROOT / package, quiet=1)
    folder = Path(tempfile.mkdtemp(prefix="reload-runserver-"))
    servers = {variant: Runserver(variant, folder) for variant in SETTINGS}
    for server in servers.values():
        server.start()
    #: (case, variant) -> per reload: touch → answer, seen → answer, seen → gone, gone → answer
    results: dict[tuple[str, str], list[tuple[float, ...]]] = {
        (case, variant): [] for case in CASES for variant in SETTINGS
    }
    #: (case, variant) -> how the open stream ended, per reload
    endings: dict[tuple[str, str], list[str]] = {key: [] for key in results}
    try:
        for server in servers.values():
            server.wait_listening()
            server.wait_pid(None, RELOAD_TIMEOUT)  # django_graceful starts on a first request
        for round_no in range(args.rounds):
            for case in rotation(round_no, list(CASES)):
                for variant in rotation(round_no, list(SETTINGS)):
                    total, after_seen, exited, ending = reload_once(servers[variant], case)
                    results[case, variant].append((total, after_seen, exited, after_seen - exited))
                    endings[case, variant].append(ending)
                    log(
                        f"round {round_no + 1} {CASES[case]} {variant}: {total:.3f} s "
                        f"({after_seen:.3f} s from seen, old process gone after {exited:.3f} s"
                        f"{'' if ending == '-' else ', stream ' + ending})"
                    )
    finally:
        for server in servers.values():
            server.kill()

    def mean(key: tuple[str, str], column: int) -> float:
        return statistics.mean(row[column] for row in results[key])

    def spread(key: tuple[str, str], column: int) -> str:
        values = [row[column] for row in results[key]]
        return f"{min(values):.3f}-{max(values):.3f}"

    lines = [
        "# A reload under Daphne's runserver (autoreloader), idle and with an open EventSource",
        "",
        f"{versions('django', 'channels', 'daphne', 'twisted')}; {machine()}; {source_state()}",
        f"{args.rounds} reloads per case and variant, both variants running at once, taking turns.",
        "",
        "| case | | touch → answer, mean (min-max) | seen → answer | seen → old process gone "
        "| gone → answer | the stream ended |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, title in CASES.items():
        for variant in SETTINGS:
            key = (case, variant)
            ended = ", ".join(f"{endings[key].count(e)} {e}" for e in sorted(set(endings[key])))
            lines.append(
                f"| {title} | {LABELS[variant]} | {mean(key, 0):.3f} ({spread(key, 0)}) "
                f"| {mean(key, 1):.3f} ({spread(key, 1)}) "
                f"| {mean(key, 2):.3f} ({spread(key, 2)}) "
                f"| {mean(key, 3):.3f} ({spread(key, 3)}) | {ended} |"
            )
    for column, name in (
        (0, "touch → answer"),
        (1, "seen → answer"),
        (2, "seen → old process gone"),
        (3, "gone → answer"),
    ):
        for case, title in CASES.items():
            plain, graceful = mean((case, "plain"), column), mean((case, "graceful"), column)
            lines.append(
                f"\n{name}, {title}: django_graceful / plain = {graceful / plain:.3f}, "
                f"difference {graceful - plain:+.3f} s"
            )
    for variant in SETTINGS:
        idle, events = mean(("idle", variant), 1), mean(("events", variant), 1)
        lines.append(
            f"\nseen → answer, {LABELS[variant]}: open EventSource minus idle = "
            f"{events - idle:+.3f} s (goal: within 0.5 s)"
        )
    publish("reload_runserver.md", "\n".join(lines), began)


if __name__ == "__main__":
    main()
