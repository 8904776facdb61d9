"""What a deploy under load loses: SIGTERM to a busy server, and every request counted once.

``--clients`` threads each send ``GET /slow/?s=0.2`` (a 32 KiB answer) back to back,
straight to the server, each on a fresh connection (``Connection: close``), or with
``--keepalive`` on one HTTP/1.1 keep-alive connection each (a new one only after the
server closed the old one: a ``Connection: close`` answer, or EOF between requests).
``--signal-after`` seconds in, the server's main process gets SIGTERM (Gunicorn: its
master); the clients go on until the server's whole process group is gone, then each
makes one last attempt (which must be refused), or until ``--cap`` seconds after the
signal (then the server is killed, and the row says so). Each request is:

- ok: a 200 with the whole body (Content-Length satisfied);
- refused: connection refused at connect, or a whole 503 (both safe to retry); 503s
  without ``Connection: close`` are counted apart (a defect: the client may reuse a
  connection the server is about to drop). A refused client waits ``--retry-pause`` s
  before its next attempt, as a retrying client would, rather than spin;
- lost: anything else (a reset after the request was sent, a connection closed without
  an answer, a timeout, a cut body, another status), with the reason. With
  ``--keepalive``, EOF or a reset before any byte of the answer on a reused connection
  is lost too, and shown apart (HTTP clients retry those); a FIN between requests is
  not a request.

With ``--drain S`` > 0, requests *sent* in the first S seconds after the signal that
were refused or got a 503 are counted too: the drain delay keeps serving, so it must be
0 for django_graceful.

Each chosen server (its usual command line, ``--workers`` processes; Daphne has no such
flag: always one) runs plain Django, then django_graceful (``GRACE_PERIOD=--grace``,
``CANCEL_TIMEOUT=1``, ``DRAIN_DELAY=--drain``, via bench/project/settings_deploy.py), a
fresh server each time, ``--repeat`` times each (summed). Clients start once the server
listens, answered ``GET /hello/`` and every worker answered a ``/slow/`` request.

Run: ``.venvs/py311/bin/python bench/deploy.py [--servers uvicorn daphne] [--keepalive]
[--clients 16] [--signal-after 2] [--grace 3] [--drain 0] [--workers 2] [--repeat 1]``
"""

from __future__ import annotations

import errno
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path: the repository instead (a
# file of bench/ would shadow a package: bench/websockets.py the ``websockets`` package).
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from bench.harness import (  # noqa: E402
    LABELS,
    RESULTS,
    SERVER_NAMES,
    SERVERS,
    VARIANTS,
    Reply,
    Server,
    ServerError,
    _dechunk,
    arguments,
    begin,
    http_get,
    log,
    publish,
    versions,
)
from django_graceful._cli.servers import KINDS  # noqa: E402

DEPLOY_SETTINGS = "bench.project.settings_deploy"
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 15.0  # the whole request, connect included
WARM_UP_TIMEOUT = 30.0
WARM_UP_PATH = "/slow/?s=0.3"  # long enough for a batch to spread over the workers

OK, REFUSED, LOST = "ok", "refused", "lost"
CONNECTION_REFUSED = "connection refused"
REFUSED_503 = "503"
REFUSED_503_OPEN = "503 without Connection: close"
RESET, TIMEOUT, NO_ANSWER = "reset", "timeout", "closed without answer"


@dataclass(frozen=True)
class Load:
    clients: int
    seconds: float
    signal_after: float
    grace: float
    drain: float
    workers: int
    keepalive: bool
    cap: float
    repeat: int
    retry_pause: float

    @property
    def path(self) -> str:
        return f"/slow/?s={self.seconds:g}"

    def slug(self, servers: list[str]) -> str:
        text = (
            f"deploy-c{self.clients}-s{self.seconds:g}-t{self.signal_after:g}"
            f"-g{self.grace:g}-d{self.drain:g}-w{self.workers}"
        )
        text += "-keepalive" if self.keepalive else ""
        text += f"-r{self.repeat}" if self.repeat > 1 else ""
        return text + ("" if servers == list(SERVERS) else "-" + "+".join(servers))


# -- one client: a request on a fresh or kept-alive connection, and what came back -------


@dataclass
class Answer:
    status: int | None = None
    close: bool = False  # the server said it closes the connection after this answer
    complete: bool = False  # the whole body arrived
    received: int = 0  # bytes of the answer
    error: str | None = None


@dataclass(frozen=True)
class Attempt:
    began: float  # time.monotonic() when the attempt began (connect, or send if reused)
    kind: str  # OK, REFUSED or LOST
    reason: str
    reused: bool = False  # sent on a keep-alive connection that had answered before
    final: bool = False  # the one attempt after the server's exit

    @property
    def lost_on_reused(self) -> bool:
        return self.kind == LOST and self.reused and self.reason in (RESET, NO_ANSWER)


class _Reader:
    """Receives from one socket until a deadline; ``more()`` is False at EOF."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline, self.data = sock, deadline, b""

    def more(self) -> bool:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        self.data += chunk
        return bool(chunk)


def parse_head(head: bytes) -> tuple[int | None, dict[bytes, bytes], bool]:
    """(status, lower-cased headers, whether the server closes the connection after it)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split()
    if len(parts) < 2 or not parts[1].isdigit():
        return None, {}, True
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    tokens = {t.strip().lower() for t in headers.get(b"connection", b"").split(b",")}
    close = b"close" in tokens or (parts[0] == b"HTTP/1.0" and b"keep-alive" not in tokens)
    return int(parts[1]), headers, close


def _read_into(reader: _Reader, answer: Answer) -> None:
    """Read one answer; ``answer.complete`` only once its whole body arrived."""
    while b"\r\n\r\n" not in reader.data:
        if not reader.more():
            return
    head = reader.data.partition(b"\r\n\r\n")[0]
    answer.status, headers, answer.close = parse_head(head)
    start = len(head) + 4
    if answer.status is None:
        return
    if b"content-length" in headers:
        while len(reader.data) < start + int(headers[b"content-length"]):
            if not reader.more():
                return
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while not _dechunk(reader.data[start:])[1]:
            if not reader.more():
                return
    else:  # delimited by the end of the connection
        answer.close = True
        while reader.more():
            pass
    answer.complete = True


def exchange(sock: socket.socket, request: bytes, deadline: float) -> Answer:
    """Send ``request`` and read its answer, every step bounded by ``deadline``."""
    answer = Answer()
    reader = _Reader(sock, deadline)
    try:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(request)
        _read_into(reader, answer)
    except TimeoutError:
        answer.error = TIMEOUT
    except ConnectionError:  # reset, broken pipe, aborted
        answer.error = RESET
    except OSError as exc:
        answer.error = errno.errorcode.get(exc.errno or 0, str(exc))
    answer.received = len(reader.data)
    return answer


def classify(answer: Answer) -> tuple[str, str]:
    """(kind, reason) of an answer to a request that was sent."""
    if answer.status is None:
        if answer.error == TIMEOUT:
            return LOST, TIMEOUT
        if answer.received:
            return LOST, "cut or garbled head"
        return LOST, answer.error or NO_ANSWER
    if not answer.complete:
        return LOST, TIMEOUT if answer.error == TIMEOUT else "cut body"
    if answer.status == 200:
        return OK, "200"
    if answer.status == 503:
        return REFUSED, REFUSED_503 if answer.close else REFUSED_503_OPEN
    return LOST, f"status {answer.status}"


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed (FIN or reset) an idle connection; never waits."""
    sock.settimeout(0.0)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class Client:
    """One client's requests: each on a fresh connection, or on one kept alive."""

    def __init__(self, port: int, path: str, keepalive: bool) -> None:
        self.port, self.keepalive = port, keepalive
        close = "" if keepalive else "Connection: close\r\n"
        self.request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{close}\r\n".encode()
        self.sock: socket.socket | None = None

    def attempt(self) -> Attempt:
        if self.sock is not None and _closed_by_peer(self.sock):
            self.close()  # closed between requests: no request was lost
        began = time.monotonic()
        reused = self.sock is not None
        if self.sock is None:
            try:
                self.sock = socket.create_connection(
                    ("127.0.0.1", self.port), timeout=CONNECT_TIMEOUT
                )
            except ConnectionRefusedError:
                return Attempt(began, REFUSED, CONNECTION_REFUSED)
            except TimeoutError:
                return Attempt(began, LOST, "connect timeout")
            except OSError as exc:
                return Attempt(began, LOST, f"connect: {errno.errorcode.get(exc.errno or 0)}")
        answer = exchange(self.sock, self.request, began + REQUEST_TIMEOUT)
        kind, reason = classify(answer)
        if not (self.keepalive and answer.complete and not answer.close):
            self.close()
        return Attempt(began, kind, reason, reused=reused)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def client_loop(client: Client, stop: threading.Event, pause: float, out: list[Attempt]) -> None:
    """Requests back to back until ``stop``; then one last one on a fresh connection."""
    try:
        while not stop.is_set():
            attempt = client.attempt()
            out.append(attempt)
            if attempt.kind == REFUSED and pause > 0:
                stop.wait(pause)
        client.close()
        out.append(replace(client.attempt(), final=True))
    finally:
        client.close()


# -- one run: a fresh server, the load, SIGTERM, and the wait for the whole group --------


@dataclass
class Run:
    attempts: list[Attempt] = field(default_factory=list)
    signalled_at: float | None = None
    exit_after: float | None = None  # None: still running at the cap
    exit_code: int | None = None
    killed: str | None = None  # why the server was killed at the cap
    error: str | None = None

    def since_signal(self, attempt: Attempt) -> float:
        assert self.signalled_at is not None
        return attempt.began - self.signalled_at


def processes(server: str, workers: int) -> int:
    """How many processes serve requests (Daphne: one, it has no ``--workers``)."""
    return workers if KINDS[server].has_workers else 1


def server_env(variant: str, load: Load, marks: Path) -> dict[str, str]:
    env = {"BENCH_MARKS": str(marks)}
    if variant == "graceful":
        env["DJANGO_SETTINGS_MODULE"] = DEPLOY_SETTINGS
        env["BENCH_GRACE"] = f"{load.grace:g}"
        env["BENCH_DRAIN"] = f"{load.drain:g}"
    return env


def _marked_pids(marks: Path) -> set[str]:
    """Pids of the processes whose ``/slow/`` view began (the view writes the marks)."""
    if not marks.exists():
        return set()
    lines = marks.read_text().splitlines()
    return {line.split()[1] for line in lines if line.startswith("slow-begin ")}


def _batch(port: int, path: str, count: int) -> list[Reply]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: http_get(port, path, timeout=15), range(count)))


def warm_up(proc: Server, workers: int, marks: Path) -> None:
    """``/hello/`` answers 200, and each of the ``workers`` processes served a request."""
    deadline = time.monotonic() + WARM_UP_TIMEOUT
    hello = http_get(proc.port, "/hello/", timeout=15)
    if hello.status != 200:
        raise ServerError(f"warm-up got {hello.describe()}:\n{proc.tail()}")
    while len(_marked_pids(marks)) < workers:
        if time.monotonic() > deadline:
            seen = len(_marked_pids(marks))
            raise ServerError(f"warm-up: {seen} of {workers} workers answered:\n{proc.tail()}")
        for reply in _batch(proc.port, WARM_UP_PATH, 2 * workers):
            if reply.status != 200 or not reply.complete:
                raise ServerError(f"warm-up got {reply.describe()}:\n{proc.tail()}")


def wait_gone(proc: Server, cap: float) -> tuple[float | None, str | None]:
    """(seconds from SIGTERM to the main process's exit, why it must be killed, if so)."""
    exit_after = proc.wait_exit(cap)
    if exit_after is None:
        return None, "still running"
    assert proc.signalled_at is not None
    if proc.group_alive(within=max(0.0, proc.signalled_at + cap - time.monotonic())):
        return exit_after, "workers left running"
    return exit_after, None


def start_clients(
    port: int, load: Load, stop: threading.Event
) -> tuple[list[threading.Thread], list[list[Attempt]]]:
    outs: list[list[Attempt]] = [[] for _ in range(load.clients)]
    threads = [
        threading.Thread(
            target=client_loop,
            args=(Client(port, load.path, load.keepalive), stop, load.retry_pause, out),
            name=f"deploy-client-{i}",
            daemon=True,
        )
        for i, out in enumerate(outs)
    ]
    for thread in threads:
        thread.start()
    return threads, outs


def run_once(server: str, variant: str, load: Load, index: int) -> Run:
    """A fresh server under load, SIGTERM, the wait; what each request got. Kills it all."""
    name = f"deploy-{server}-{variant}-{index}"
    marks = RESULTS / f"{name}.marks"
    marks.unlink(missing_ok=True)
    proc = Server(
        server,
        variant,
        log_path=RESULTS / f"{name}.log",
        workers=load.workers if KINDS[server].has_workers else None,
        env=server_env(variant, load, marks),
    )
    run = Run()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    outs: list[list[Attempt]] = []
    try:
        proc.start()
        proc.wait_listening(30)
        warm_up(proc, processes(server, load.workers), marks)
        threads, outs = start_clients(proc.port, load, stop)
        time.sleep(load.signal_after)
        proc.terminate()
        run.signalled_at = proc.signalled_at
        run.exit_after, run.killed = wait_gone(proc, load.cap)
        assert proc.proc is not None
        run.exit_code = proc.proc.returncode
    except ServerError as exc:
        run.error = str(exc).splitlines()[0]
        print(str(exc), file=sys.stderr)
    finally:
        proc.kill()  # before the clients stop: their last attempt meets no server
        stop.set()
        for thread in threads:
            thread.join(timeout=CONNECT_TIMEOUT + REQUEST_TIMEOUT + 5)
        marks.unlink(missing_ok=True)
    run.attempts = [attempt for out in outs for attempt in out]
    return run


# -- the table ---------------------------------------------------------------------------


def breakdown(total: int, reasons: Counter[str]) -> str:
    if not total:
        return "0"
    return f"{total} ({', '.join(f'{why} {n}' for why, n in reasons.most_common())})"


def refused_cell(attempts: list[Attempt]) -> str:
    reasons = Counter(a.reason for a in attempts if a.kind == REFUSED)
    text = f"{sum(reasons.values())} (503: {reasons[REFUSED_503] + reasons[REFUSED_503_OPEN]}"
    if reasons[REFUSED_503_OPEN]:
        text += f", {reasons[REFUSED_503_OPEN]} without `Connection: close`"
    return text + ")"


def exit_cell(run: Run, cap: float) -> str:
    if run.error:
        return f"error: {run.error}"
    if run.exit_after is None:
        return f"> {cap:g} s (still running, killed)"
    text = f"{run.exit_after:.2f}"
    if run.killed:
        return f"{text} ({run.killed}, killed at {cap:g} s)"
    return text + (f" (exit code {run.exit_code})" if run.exit_code else "")


def in_drain(runs: Iterable[Run], drain: float) -> int:
    """Requests sent in the first ``drain`` s after the signal and refused (or a 503)."""
    return sum(
        1
        for run in runs
        if run.signalled_at is not None
        for a in run.attempts
        if a.kind == REFUSED and 0 <= run.since_signal(a) < drain
    )


def row(server: str, variant: str, runs: list[Run], load: Load) -> str:
    attempts = [a for run in runs for a in run.attempts]
    lost = Counter(a.reason for a in attempts if a.kind == LOST)
    reused = Counter(a.reason for a in attempts if a.lost_on_reused)
    cells = [SERVER_NAMES[server], LABELS[variant], str(sum(a.kind == OK for a in attempts))]
    cells += [refused_cell(attempts), breakdown(lost.total(), lost)]
    if load.keepalive:
        cells.append(breakdown(reused.total(), reused))
    cells.append(", ".join(exit_cell(run, load.cap) for run in runs))
    if load.drain > 0:
        cells.append(str(in_drain(runs, load.drain)))
    return "| " + " | ".join(cells) + " |"


def table(results: dict[tuple[str, str], list[Run]], load: Load) -> str:
    head = ["server", "app", "ok", "refused (of which 503)", "lost (why)"]
    if load.keepalive:
        head.append("of the lost: on a reused keep-alive connection")
    head.append("exit after SIGTERM (s)")
    if load.drain > 0:
        head.append(f"sent in the first {load.drain:g} s after SIGTERM, refused or 503")
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    lines += [row(server, variant, runs, load) for (server, variant), runs in results.items()]
    return "\n".join(lines)


def header(servers: list[str], load: Load) -> list[str]:
    connection = (
        "one keep-alive connection each (a new one after the server closed it)"
        if load.keepalive
        else "a fresh connection each (`Connection: close`)"
    )
    return [
        f"A deploy under load ({versions('django', servers=servers)}).",
        f"{load.clients} clients, each `GET {load.path}` (32 KiB) back to back on {connection}; "
        f"SIGTERM to the server's main process {load.signal_after:g} s in; "
        f"{load.workers} workers (Daphne: 1 process); {load.repeat} run(s) per row, summed.",
        f"django_graceful: GRACEFUL = {{'DRAIN_DELAY': {load.drain:g}, "
        f"'GRACE_PERIOD': {load.grace:g}, 'CANCEL_TIMEOUT': 1}}.",
        "ok: 200, whole body. refused: connection refused or a whole 503, safe to retry "
        f"(a refused client waits {load.retry_pause:g} s before its next try; counts each "
        "client's last try after the exit). lost: anything else.",
        "",
    ]


def notes(results: dict[tuple[str, str], list[Run]]) -> list[str]:
    """Last attempts (after the exit) that were not refused: the port still answered."""
    odd = [
        f"{server}/{variant}: {a.kind} ({a.reason})"
        for (server, variant), runs in results.items()
        for run in runs
        for a in run.attempts
        if a.final and a.kind != REFUSED
    ]
    return [f"Last attempts after the exit not refused: {'; '.join(odd)}"] if odd else []


def progress(server: str, variant: str, run: Run, load: Load) -> str:
    kinds = Counter(a.kind for a in run.attempts)
    lost = [a for a in run.attempts if a.kind == LOST]
    text = f"{server:16} {variant:8} ok {kinds[OK]}, refused {kinds[REFUSED]}, lost {len(lost)}"
    if lost and run.signalled_at is not None:
        reasons = Counter(a.reason for a in lost)
        at = sorted(run.since_signal(a) for a in lost)
        text += f" ({dict(reasons)}, sent {at[0]:+.2f}..{at[-1]:+.2f} s from SIGTERM)"
    return text + f"; exit {exit_cell(run, load.cap)} (code {run.exit_code})"


def parse(argv: list[str] | None) -> tuple[list[str], list[str], Load]:
    parser = arguments(__doc__, servers=True, variants=VARIANTS)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=0.2, help="each request's view, s")
    parser.add_argument("--signal-after", type=float, default=2.0, help="SIGTERM after, s")
    parser.add_argument("--grace", type=float, default=3.0, help="GRACE_PERIOD, s")
    parser.add_argument("--drain", type=float, default=0.0, help="DRAIN_DELAY, s")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keepalive", action="store_true", help="one connection per client")
    parser.add_argument("--cap", type=float, default=30.0, help="kill the server after, s")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row, summed")
    parser.add_argument("--retry-pause", type=float, default=0.05, help="after a refusal, s")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.workers < 1 or args.repeat < 1:
        parser.error("--clients, --workers and --repeat must be at least 1")
    if not 1 <= args.cap <= 300 or min(args.seconds, args.signal_after, args.drain) < 0:
        parser.error("--cap must be between 1 and 300 s; durations not negative")
    load = Load(
        args.clients, args.seconds, args.signal_after, args.grace, args.drain, args.workers,
        args.keepalive, args.cap, args.repeat, args.retry_pause,
    )  # fmt: skip
    variants = [v for v in VARIANTS if v in args.variants]  # plain first
    return args.servers, variants, load


def main(argv: list[str] | None = None) -> int:
    servers, variants, load = parse(argv)
    began = begin()
    results: dict[tuple[str, str], list[Run]] = {}
    for server in servers:
        for variant in variants:
            for index in range(1, load.repeat + 1):
                run = run_once(server, variant, load, index)
                results.setdefault((server, variant), []).append(run)
                log(progress(server, variant, run, load))
    text = "\n".join([*header(servers, load), table(results, load), "", *notes(results)])
    publish(f"{load.slug(servers)}.md", text, began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
