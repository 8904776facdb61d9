"""How fast a development server reloads, and what a request sent during the reload gets:
plain Django vs django_graceful under ``uvicorn --reload`` and ``granian --reload``.

For each reloader (``uvicorn --reload``, ``granian --interface asgi --reload``, Granian's
RSGI ``granian --reload``) and each variant of the bench project (plain Django;
django_graceful with ``GRACE_PERIOD=2, CANCEL_TIMEOUT=1``), one server watching a folder
of its own (``--reload-dir`` / ``--reload-paths``), nothing in flight:

- **reload**: ``--rounds`` times, a watched file is touched and the time until the next
  process answers ``GET /hello/`` is taken (the client connects only once the reloader
  has started that process: it is the reload's time, not a client's retry); the median;
- **open EventSource**: ``--rounds`` times, the same while a client holds ``/events/``
  (server-sent events with no end of their own) open from before the touch; the median
  (past ``RELOAD_CAP``: the reload waited for the stream, and the client then closed it),
  how the stream ended (a terminated body, or a cut connection), and the difference
  against idle (the goal: within 0.5 s);
- **during**: ``--rounds`` times, a watched file is touched and requests are sent
  ``DURING`` s after the touch, each on a new connection, while the old process stops and
  the next one starts: how many got 200, and what the others got.

Plain Django on RSGI is django-rsgi (Python >= 3.12, Django >= 6.0); without it the RSGI
row has no plain variant. Django and django_graceful are imported from bytecode compiled
once before the run (``compileall``), as after a ``pip install``: where
``PYTHONDONTWRITEBYTECODE`` is set each new process would compile django_graceful from
source again, about 0.3 s a reload on a busy 2-CPU machine, which is no cost of ours.

Run: ``.venvs/py313/bin/python bench/reload.py [--servers uvicorn granian] [--rounds 3]``
"""

from __future__ import annotations

import compileall
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path: the repository instead (a
# file of bench/ would shadow a package: bench/websockets.py the ``websockets`` package).
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from bench.harness import (  # noqa: E402
    LABELS,
    RESULTS,
    VARIANTS,
    EventSource,
    Reply,
    Server,
    ServerError,
    arguments,
    begin,
    command,
    http_get,
    log,
    machine,
    publish,
    versions,
)

#: Reloader -> its flags (``{dir}``: the folder it watches).
RELOADERS = {
    "uvicorn": ["--reload", "--reload-dir", "{dir}"],
    "granian": ["--reload", "--reload-paths", "{dir}"],
    "granian-rsgi": ["--reload", "--reload-paths", "{dir}"],
}
NAMES = {
    "uvicorn": "`uvicorn --reload`",
    "granian": "`granian --interface asgi --reload`",
    "granian-rsgi": "`granian --reload` (RSGI)",
}
#: Plain Django on RSGI (django-rsgi) instead of the variant's ASGI app.
PLAIN_RSGI = "bench.project.rsgi_plain:application"
#: Seconds after the touch at which the "during" requests are sent.
DURING = (0.1, 0.2, 0.4, 0.8)
#: Longest wait for one reload, and for one request.
RELOAD_CAP = 20.0
REQUEST_CAP = 15.0
#: Seconds the server is left alone between two rounds (the watcher settles).
PAUSE = 1.0


@dataclass
class Result:
    reloads: list[float] = field(default_factory=list)
    #: With an open EventSource: each reload's time (None: not within RELOAD_CAP), and
    #: how the stream ended.
    streamed: list[float | None] = field(default_factory=list)
    endings: list[str] = field(default_factory=list)
    during: list[Reply] = field(default_factory=list)
    skipped: str | None = None

    def reload_text(self) -> str:
        if not self.reloads:
            return "-"
        median = statistics.median(self.reloads)
        return f"{median:.2f} s ({min(self.reloads):.2f}-{max(self.reloads):.2f})"

    def streamed_median(self) -> float | None:
        """The median with the stream open, None where half of them or more hit the cap."""
        times = sorted(RELOAD_CAP if t is None else t for t in self.streamed)
        median = statistics.median(times) if times else None
        return None if median is None or median >= RELOAD_CAP else median

    def streamed_text(self) -> str:
        if not self.streamed:
            return "-"
        capped = sum(t is None for t in self.streamed)
        median = self.streamed_median()
        text = f"> {RELOAD_CAP:g} s" if median is None else f"{median:.2f} s"
        if capped:
            text += f" ({capped}/{len(self.streamed)} waited for the stream past the cap)"
        ended = ", ".join(f"{self.endings.count(e)}x {e}" for e in sorted(set(self.endings)))
        return f"{text}; the stream: {ended}"

    def during_text(self) -> str:
        if not self.during:
            return "-"
        ok = sum(r.status == 200 for r in self.during)
        others: dict[str, int] = {}
        for reply in self.during:
            if reply.status != 200:
                what = reply.describe()
                others[what] = others.get(what, 0) + 1
        slowest = max(r.elapsed for r in self.during if r.status == 200) if ok else None
        text = f"{ok}/{len(self.during)} got 200"
        if slowest is not None:
            text += f" (slowest {slowest:.2f} s)"
        if others:
            text += "; " + ", ".join(f"{n}x {what}" for what, n in others.items())
        return text


def children(pid: int) -> set[int]:
    """The processes ``pid`` started (Linux)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(p) for p in f.read().split()}
    except OSError:
        return set()


def answers(port: int) -> bool:
    return http_get(port, "/hello/", 2.0).status == 200


def touch(module: Path) -> None:
    module.write_text(module.read_text() + "VALUE += 1\n")


def wait_answer(server: Server, seen: set[int], since: float) -> float | None:
    """Seconds from ``since`` until a process the reloader started after ``seen`` answers."""
    assert server.proc is not None
    deadline = since + RELOAD_CAP
    while time.monotonic() < deadline:
        if children(server.proc.pid) - seen and answers(server.port):
            return time.monotonic() - since
        time.sleep(0.01)
    return None


def settle(server: Server) -> set[int]:
    """Wait until the server answers and stays idle; the processes its reloader runs."""
    assert server.proc is not None
    deadline = time.monotonic() + RELOAD_CAP
    while not answers(server.port):
        if time.monotonic() > deadline:
            raise ServerError(f"{server.server} does not answer:\n{server.tail()}")
        time.sleep(0.05)
    time.sleep(PAUSE)
    return children(server.proc.pid)


def during_round(server: Server, module: Path) -> list[Reply]:
    replies: list[Reply] = []
    lock = threading.Lock()

    def send(at: float) -> None:
        time.sleep(max(0.0, at - time.monotonic()))
        reply = http_get(server.port, "/hello/", REQUEST_CAP)
        with lock:
            replies.append(reply)

    touched = time.monotonic()
    touch(module)
    threads = [threading.Thread(target=send, args=(touched + d,)) for d in DURING]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(REQUEST_CAP + 2)
    return replies


def stream_round(server: Server, module: Path, seen: set[int]) -> tuple[float | None, str]:
    """A reload while a client holds ``/events/`` open: its time (None: past the cap,
    the client then closes the stream) and how the stream ended."""
    stream = EventSource(server.port, REQUEST_CAP)
    if not stream.wait_open(REQUEST_CAP):
        raise ServerError(f"/events/ sent nothing:\n{server.tail()}")
    began = time.monotonic()
    touch(module)
    took = wait_answer(server, seen, began)
    if took is None:
        stream.close()
        return None, "open until the client closed it"
    return took, stream.ending(REQUEST_CAP)


def run(server_kind: str, variant: str, rounds: int, rsgi_plain: bool) -> Result:
    result = Result()
    if server_kind == "granian-rsgi" and variant == "plain" and not rsgi_plain:
        result.skipped = "django-rsgi missing (Python >= 3.12, Django >= 6.0)"
        return result
    with tempfile.TemporaryDirectory(prefix="reload-") as folder:
        module = Path(folder) / "watched.py"
        module.write_text("VALUE = 1\n")
        flags = [flag.format(dir=folder) for flag in RELOADERS[server_kind]]
        server = Server(
            server_kind,
            variant,
            log_path=RESULTS / f"reload-{server_kind}-{variant}.log",
            extra=flags,
        )
        if server_kind == "granian-rsgi" and variant == "plain":
            server.cmd = command(server_kind, PLAIN_RSGI, server.port, flags)
        with server:
            server.wait_listening()
            seen = settle(server)
            for _ in range(rounds):
                began = time.monotonic()
                touch(module)
                took = wait_answer(server, seen, began)
                if took is None:
                    raise ServerError(f"no reload within {RELOAD_CAP:g} s:\n{server.tail()}")
                result.reloads.append(took)
                seen = settle(server)
            for _ in range(rounds):
                took, ending = stream_round(server, module, seen)
                result.streamed.append(took)
                result.endings.append(ending)
                seen = settle(server)
            for _ in range(rounds):
                result.during.extend(during_round(server, module))
                seen = settle(server)
    return result


def comparison(results: dict[tuple[str, str], Result], servers: list[str]) -> list[str]:
    lines = []
    for kind in servers:
        plain, graceful = results.get((kind, "plain")), results.get((kind, "graceful"))
        if not (plain and graceful and plain.reloads and graceful.reloads):
            continue
        p, g = statistics.median(plain.reloads), statistics.median(graceful.reloads)
        lines.append(
            f"- {NAMES[kind]}: django_graceful / plain = {g / p:.2f}, "
            f"difference {g - p:+.2f} s (medians)"
        )
    for (kind, variant), result in results.items():
        streamed = result.streamed_median()
        if result.reloads and result.streamed:
            idle = statistics.median(result.reloads)
            against = "past the cap" if streamed is None else f"{streamed - idle:+.2f} s"
            lines.append(
                f"- {NAMES[kind]}, {LABELS[variant]}: open EventSource against idle: {against} "
                "(medians; goal: within 0.5 s)"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__, variants=("plain", "graceful"))
    parser.add_argument("--servers", nargs="+", choices=list(RELOADERS), default=list(RELOADERS))
    parser.add_argument("--rounds", type=int, default=3, help="reloads of each kind, 1-10")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be between 1 and 10")
    for variant in args.variants:
        assert variant in VARIANTS
    began = begin()
    for folder in ("django_graceful", "bench"):
        compileall.compile_dir(ROOT / folder, quiet=1)
    rsgi_plain = _django_rsgi_present()
    started = machine()
    results: dict[tuple[str, str], Result] = {}
    for kind in args.servers:
        for variant in args.variants:
            result = run(kind, variant, args.rounds, rsgi_plain)
            results[kind, variant] = result
            log(
                f"{kind:13} {variant:9} "
                + (
                    result.skipped
                    or f"reload {result.reload_text()}; open EventSource "
                    f"{result.streamed_text()}; {result.during_text()}"
                )
            )
    rows = [
        "| reloader | variant | reload (median, min-max) | with an open EventSource "
        "| requests during the reload |",
        "|---|---|---|---|---|",
    ]
    for (kind, variant), result in results.items():
        reload_text = result.skipped or result.reload_text()
        rows.append(
            f"| {NAMES[kind]} | {LABELS[variant]} | {reload_text} | {result.streamed_text()} "
            f"| {result.during_text()} |"
        )
    named = versions("django", "watchfiles", servers=["uvicorn", "granian"])
    header = [
        f"Development server reloads ({named}; {started}).",
        f"{args.rounds} idle reloads each (touch to the next process answering), "
        f"{args.rounds} with an open EventSource, then "
        f"{args.rounds} reloads with requests sent {', '.join(f'{d:g}' for d in DURING)} s "
        "after the touch.",
        "",
    ]
    publish("reload.md", "\n".join([*header, *rows, "", *comparison(results, args.servers)]), began)
    return 0


def _django_rsgi_present() -> bool:
    with contextlib.suppress(ImportError):
        import django_rsgi  # noqa: F401

        return True
    return False


if __name__ == "__main__":
    sys.exit(main())
