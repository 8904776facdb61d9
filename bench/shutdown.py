"""How each ASGI server stops on SIGTERM with a request in flight: plain Django vs django_graceful.

For each server (Uvicorn, Hypercorn, Granian ``--interface asgi``, Daphne, Gunicorn with
``-k uvicorn_worker.UvicornWorker`` and with ``--worker-class asgi``, each started with its
usual command line) and each variant of the bench project (plain Django;
django_graceful with ``GRACE_PERIOD=2, CANCEL_TIMEOUT=1``), on a fresh server each time:

(a) one in-flight 1 s request, SIGTERM at 0.3 s: what the client got (status, whole
    body or not) and how long after the SIGTERM the server's main process exited;
(b) one in-flight 600 s request, SIGTERM at 1 s: the same, the wait capped at ``--cap``
    seconds (a server still running then is killed and shown as such);
(idle) no request, SIGTERM after the warm-up: how long the server takes to exit anyway;
(sse) one open server-sent-events stream (an ``EventSource``: a tick a second, no end of
    its own), SIGTERM at 0.3 s: whether the client got a complete response (its chunked
    body terminated) and how long the exit took, beside (idle). django_graceful ends such a
    stream when CLOSING begins (goal: within 0.5 s of idle); plain Django streams until the
    server gives up, if it does.

"At 0.3 s" counts from sending the request, and never before the view has begun (the
view writes a mark the harness waits for). SIGTERM goes to the main process only, as a
process manager sends it (Gunicorn: its master, which passes it to its worker); every
process of the server's group is killed afterwards.

Run: ``.venvs/py311/bin/python bench/shutdown.py [--servers uvicorn daphne] [--cap 15]
[--cases a b idle sse]`` (by default (a) and (b)).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path: the repository instead (a
# file of bench/ would shadow a package: bench/websockets.py the ``websockets`` package).
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from bench.harness import (  # noqa: E402
    LABELS,
    RESULTS,
    SERVER_NAMES,
    VARIANTS,
    Reply,
    Server,
    ServerError,
    arguments,
    begin,
    http_get,
    log,
    publish,
    versions,
    wait_for_mark,
)

#: How late the SIGTERM may come (the view began late) before the table says so.
LATE_SIGNAL = 0.1


@dataclass(frozen=True)
class Case:
    key: str
    request_seconds: float  # 0: no request; inf: a stream with no end of its own
    signal_at: float

    @property
    def title(self) -> str:
        if not self.request_seconds:
            return "idle, SIGTERM after the warm-up"
        if self.request_seconds == float("inf"):
            return f"an open event stream, SIGTERM at {self.signal_at:g} s"
        return f"{self.request_seconds:g} s request, SIGTERM at {self.signal_at:g} s"

    @property
    def path(self) -> str | None:
        """What the client asks for, and the mark its view writes when it begins."""
        if not self.request_seconds:
            return None
        if self.request_seconds == float("inf"):
            return "/events/"
        return f"/slow/?s={self.request_seconds:g}"

    @property
    def mark(self) -> str:
        return "events-begin" if self.request_seconds == float("inf") else "slow-begin"


CASES = (
    Case("a", 1.0, 0.3),
    Case("b", 600.0, 1.0),
    Case("idle", 0.0, 0.0),
    Case("sse", float("inf"), 0.3),
)


@dataclass
class Outcome:
    reply: Reply | None = None
    exit_after: float | None = None  # None: still running at the cap
    exit_code: int | None = None
    leftovers: bool = False  # the main process exited, other processes of the group did not
    signalled_after: float | None = None  # seconds from sending the request
    error: str | None = None

    def exit_text(self, cap: float) -> str:
        if self.error:
            return "-"
        if self.exit_after is None:
            return f"> {cap:g} s (still running, killed)"
        text = f"{self.exit_after:.2f} s"
        return text + " (workers left running, killed)" if self.leftovers else text

    def client_text(self, with_body: bool = False) -> str:
        if self.error:
            return f"error: {self.error}"
        if self.reply is None:
            return "?"
        text = self.reply.describe()
        if with_body and self.reply.status is not None:
            text += ", whole body" if self.reply.complete else f", body {self.reply.body()}"
        return text

    def body_text(self) -> str:
        return "-" if self.error or self.reply is None else self.reply.body()


def run_case(server: str, variant: str, case: Case, cap: float) -> Outcome:
    """A fresh server, one in-flight request, SIGTERM; what happened. Kills all it started."""
    name = f"shutdown-{server}-{variant}-{case.key}"
    marks = RESULTS / f"{name}.marks"
    with contextlib.suppress(FileNotFoundError):
        marks.unlink()
    outcome = Outcome()
    proc = Server(
        server, variant, log_path=RESULTS / f"{name}.log", env={"BENCH_MARKS": str(marks)}
    )
    replies: list[Reply] = []
    client: threading.Thread | None = None
    try:
        proc.start()
        proc.wait_listening(30)
        warm = http_get(proc.port, "/hello/", timeout=15)  # loads Django (and our lifecycle)
        if warm.status != 200:
            raise ServerError(f"warm-up got {warm.describe()}:\n{proc.tail()}")
        path = case.path
        client_timeout = case.signal_at + cap + 10

        def request() -> None:
            assert path is not None
            replies.append(http_get(proc.port, path, timeout=client_timeout))

        sent = time.monotonic()
        if path is not None:
            client = threading.Thread(target=request, name="bench-client", daemon=True)
            client.start()
            if not wait_for_mark(marks, case.mark, timeout=10):
                raise ServerError(f"the view never began:\n{proc.tail()}")
        time.sleep(max(0.0, sent + case.signal_at - time.monotonic()))
        proc.terminate()
        assert proc.signalled_at is not None
        outcome.signalled_after = proc.signalled_at - sent
        outcome.exit_after = proc.wait_exit(cap)
        if outcome.exit_after is not None:
            assert proc.proc is not None
            outcome.exit_code = proc.proc.returncode
            outcome.leftovers = proc.group_alive(within=1.0)
    except ServerError as exc:
        outcome.error = str(exc).splitlines()[0]
        print(str(exc), file=sys.stderr)
    finally:
        proc.kill()
        if client is not None:
            client.join(timeout=10)  # the server is gone: the client sees EOF or a reset
        with contextlib.suppress(FileNotFoundError):
            marks.unlink()
    outcome.reply = replies[0] if replies else None
    return outcome


def table(results: dict[tuple[str, str, str], Outcome], servers: list[str], cap: float) -> str:
    a, b = CASES[:2]
    lines = [
        f"| server | app | ({a.key}) {a.title}: client got | whole body | exit after SIGTERM "
        f"| ({b.key}) {b.title}: client got | exit after SIGTERM |",
        "|---|---|---|---|---:|---|---:|",
    ]
    for server in servers:
        for variant in VARIANTS:
            ra, rb = results.get((server, variant, "a")), results.get((server, variant, "b"))
            cells = [SERVER_NAMES[server], LABELS[variant]]
            cells += [ra.client_text(), ra.body_text(), ra.exit_text(cap)] if ra else ["-"] * 3
            cells += [rb.client_text(with_body=True), rb.exit_text(cap)] if rb else ["-"] * 2
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def streams_table(
    results: dict[tuple[str, str, str], Outcome], servers: list[str], cap: float
) -> str:
    """(idle) beside (sse): what an open event stream adds to the time to exit."""
    idle, sse = CASES[2:]
    lines = [
        f"| server | app | ({idle.key}) exit after SIGTERM | ({sse.key}) {sse.title}: client got "
        "| stream ended (complete body) | exit after SIGTERM | minus idle |",
        "|---|---|---:|---|---|---:|---:|",
    ]
    for server in servers:
        for variant in VARIANTS:
            ri, rs = results.get((server, variant, "idle")), results.get((server, variant, "sse"))
            cells = [SERVER_NAMES[server], LABELS[variant]]
            cells.append(ri.exit_text(cap) if ri else "-")
            cells += [rs.client_text(), rs.body_text(), rs.exit_text(cap)] if rs else ["-"] * 3
            both = ri is not None and rs is not None
            if both and ri.exit_after is not None and rs.exit_after is not None:
                cells.append(f"{rs.exit_after - ri.exit_after:+.2f} s")
            else:
                cells.append("-")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__, servers=True, variants=VARIANTS)
    parser.add_argument("--cases", nargs="+", choices=[c.key for c in CASES], default=["a", "b"])
    parser.add_argument("--cap", type=float, default=15.0, help="longest wait for an exit, s")
    args = parser.parse_args(argv)
    if not 1 <= args.cap <= 120:
        parser.error("--cap must be between 1 and 120 seconds")
    began = begin()
    results: dict[tuple[str, str, str], Outcome] = {}
    late: list[str] = []
    for server in args.servers:
        for variant in args.variants:
            for case in (c for c in CASES if c.key in args.cases):
                outcome = run_case(server, variant, case, args.cap)
                results[server, variant, case.key] = outcome
                signalled = outcome.signalled_after
                if signalled is not None and signalled > case.signal_at + LATE_SIGNAL:
                    late.append(f"{server}/{variant}/{case.key}: SIGTERM at {signalled:.2f} s")
                reply = outcome.reply
                log(
                    f"{server:9} {variant:8} ({case.key}) client: {outcome.client_text()}"
                    f" body {outcome.body_text()}"
                    f"{f' after {reply.elapsed:.2f} s' if reply else ''};"
                    f" exit {outcome.exit_text(args.cap)} (code {outcome.exit_code});"
                    f" SIGTERM at {signalled if signalled is not None else float('nan'):.2f} s"
                )
    header = [
        f"Shutdown on SIGTERM, one request in flight ({versions('django', servers=args.servers)}).",
        "django_graceful: GRACEFUL = {'GRACE_PERIOD': 2, 'CANCEL_TIMEOUT': 1}; "
        "servers started with their default flags.",
        "",
    ]
    notes = [f"SIGTERM came late (the view began late): {'; '.join(late)}"] if late else []
    tables = []
    if {"a", "b"} & set(args.cases):
        tables += [table(results, args.servers, args.cap), ""]
    if {"idle", "sse"} & set(args.cases):
        tables += [streams_table(results, args.servers, args.cap), ""]
    publish("shutdown.md", "\n".join([*header, *tables, *notes]), began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
