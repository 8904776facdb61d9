"""A deploy under load on the real servers: every request sent across a SIGTERM is either
served or refused in a way a client may safely retry, never lost.

At the end of a whole-server stop the last worker holding the listening socket shuts it
to new connections (a socket filter that drops SYNs; on a Unix-domain socket its path is
replaced, from CLOSING on), waits until the connections the kernel already queued are
accepted and answered, and only then lets the server close it (see
``django_graceful/_core/door.py``). Without that, the close resets every queued
connection: clients that sent a request and cannot tell whether it ran.

The clients here use raw sockets so that each outcome can be told apart:

- ok: a complete 200;
- refused: ``ECONNREFUSED`` at connect, or a complete 503 (which must say
  ``Connection: close``); both are safe to retry;
- lost: anything else (a reset after the request was sent, EOF without an answer, a
  timeout, a cut body, another status).

A rolling restart (a reload, a worker recycling) must leave the door open: the other
workers serve on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import stat
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .servers import SERVERS, WORKER_SERVERS, Server, in_background, running, start_with

pytestmark = pytest.mark.server

SIZE = 32768
REQUEST_SECONDS = 0.2
#: A 0.2 s async view with a body whose completeness the client checks.
PATH = f"/slow/?s={REQUEST_SECONDS}&size={SIZE}"
#: The same at once.
QUICK_PATH = f"/slow/?s=0&size={SIZE}"
CLIENTS = 8
#: When the SIGTERM comes, after the load began.
SIGNAL_AFTER = 1.0
#: A dropped SYN is sent again after 1 s, then 3 s, 7 s (loopback): long enough for a
#: shut door to become a closed port (refused); a connect that waits longer is lost.
CONNECT_TIMEOUT = 8.0
REQUEST_TIMEOUT = 10.0
RETRY_PAUSE = 0.02
#: Short phases and hooks: the exit is bounded by DRAIN_DELAY + GRACE_PERIOD +
#: CANCEL_TIMEOUT (the hooks of the test project return at once), plus EXIT_MARGIN.
PHASES = {"GRACE_PERIOD": 2, "CANCEL_TIMEOUT": 1, "HOOK_TIMEOUT": 0.5}
EXIT_MARGIN = 2.0
DOOR_LINE = "listening sockets"
SHUT_LINE = "listening sockets: shut to new connections; every queued connection answered"
LEFT_OPEN_LINE = "listening sockets: left open: other workers still serve on them"
QUEUED_LINE = "accepted by the kernel were still waiting"

OK, REFUSED, LOST = "ok", "refused", "lost"
CONNECTION_REFUSED = "connection refused"
NO_SOCKET = "no socket at the path"

#: (server, workers): every server with one worker, those with --workers with two.
LOADS = [(s, 1) for s in SERVERS] + [(s, 2) for s in WORKER_SERVERS]


# -- a raw HTTP/1.1 client -----------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def closes(self) -> bool:
        """The server said it closes the connection after this answer."""
        return "close" in self.headers.get("connection", "").lower()


class Cut(Exception):
    """The answer ended before it was complete (the reason is the message)."""


def request_bytes(path: str) -> bytes:
    """HTTP/1.1 keeps the connection open unless the server says otherwise."""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def read_reply(sock: socket.socket, buffer: bytearray) -> Reply:
    """One answer from ``sock`` (what follows it stays in ``buffer``). Raises ``Cut`` at
    EOF before the answer is complete; socket errors (a reset, a timeout) propagate."""

    def more(what: str) -> None:
        chunk = sock.recv(65536)
        if not chunk:
            raise Cut(f"EOF {what}" if buffer else "EOF without an answer")
        buffer.extend(chunk)

    while b"\r\n\r\n" not in buffer:
        more("in the head")
    head, _, _ = bytes(buffer).partition(b"\r\n\r\n")
    del buffer[: len(head) + 4]
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise Cut(f"garbled status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(buffer) < length:
            more(f"in the body ({len(buffer)} of {length} bytes)")
        body = bytes(buffer[:length])
        del buffer[:length]
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buffer:
                more("in a chunk")
            size_line, _, _ = bytes(buffer).partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(buffer) < len(size_line) + 2 + size + 2:
                more("in a chunk")
            body += bytes(buffer[len(size_line) + 2 : len(size_line) + 2 + size])
            del buffer[: len(size_line) + 2 + size + 2]
            if size == 0:
                break
    else:  # delimited by the end of the connection
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(65536):
                buffer.extend(chunk)
        body = bytes(buffer)
        buffer.clear()
    return Reply(int(parts[1]), headers, body)


@dataclass(frozen=True)
class Outcome:
    began: float  # time.monotonic() when the connect began
    kind: str  # OK, REFUSED or LOST
    reason: str
    closes: bool = False  # the answer said Connection: close


def judge(reply: Reply, began: float) -> Outcome:
    """What a whole answer to a request that was sent counts as."""
    if reply.status == 200 and len(reply.body) == SIZE:
        return Outcome(began, OK, "200", reply.closes)
    if reply.status == 200:
        reason = f"200 with {len(reply.body)} of {SIZE} bytes"
        return Outcome(began, LOST, reason, reply.closes)
    if reply.status == 503:
        return Outcome(began, REFUSED, "503", reply.closes)
    return Outcome(began, LOST, f"status {reply.status}", reply.closes)


def failure(exc: BaseException) -> str:
    """What went wrong on a connection, in a word."""
    if isinstance(exc, Cut):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, OSError):
        return errno.errorcode.get(exc.errno or 0, repr(exc))
    return repr(exc)


def one_request(srv: Server, path: str = PATH, connect_timeout: float = CONNECT_TIMEOUT) -> Outcome:
    """A GET on a fresh connection (no ``Connection: close`` asked for: a 503 must say
    it by itself), and what came of it."""
    began = time.monotonic()
    try:
        sock = srv.connect(connect_timeout)
    except ConnectionRefusedError:
        return Outcome(began, REFUSED, CONNECTION_REFUSED)
    except FileNotFoundError:  # a Unix-domain socket's path, removed at the exit
        return Outcome(began, REFUSED, NO_SOCKET)
    except OSError as exc:
        return Outcome(began, LOST, f"connect: {failure(exc)}")
    with sock:
        sock.settimeout(REQUEST_TIMEOUT)
        try:
            sock.sendall(request_bytes(path))
            reply = read_reply(sock, bytearray())
        except (OSError, Cut) as exc:
            return Outcome(began, LOST, failure(exc))
    return judge(reply, began)


def client_loop(srv: Server, stop: threading.Event, start: float, out: list[Outcome]) -> None:
    """From ``start`` on, requests back to back until ``stop``; then one last one (the
    server is gone)."""
    stop.wait(max(0.0, start - time.monotonic()))
    while not stop.is_set():
        out.append(one_request(srv))
        if out[-1].kind == REFUSED:
            stop.wait(RETRY_PAUSE)  # as a retrying client would, rather than spin
    out.append(one_request(srv))


@contextlib.contextmanager
def load(
    srv: Server, clients: int = CLIENTS
) -> Iterator[tuple[threading.Event, list[list[Outcome]]]]:
    """``clients`` threads sending requests until the event is set (then each sends one
    more); yields the event and each client's outcomes, in order."""
    stop = threading.Event()
    outs: list[list[Outcome]] = [[] for _ in range(clients)]
    now = time.monotonic()
    # Staggered over one request's time: connections arrive all the time, not in waves.
    starts = [now + i * REQUEST_SECONDS / clients for i in range(clients)]
    threads = [
        threading.Thread(target=client_loop, args=(srv, stop, start, out), daemon=True)
        for start, out in zip(starts, outs, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        yield stop, outs
    finally:
        stop.set()
        for thread in threads:
            thread.join(CONNECT_TIMEOUT + REQUEST_TIMEOUT + 2)
        assert not any(t.is_alive() for t in threads), "a client did not end"


def breakdown(outcomes: list[Outcome]) -> str:
    counts = Counter(f"{o.kind}: {o.reason}" for o in outcomes)
    return ", ".join(f"{n}x {what}" for what, n in sorted(counts.items()))


def warm_up(srv: Server, workers: int) -> None:
    """Every worker started (Daphne starts the app at its first request)."""
    first = one_request(srv, QUICK_PATH)
    assert first.kind != LOST, (first, srv.log())
    srv.wait_engaged(workers)


def deploy(
    srv: Server, workers: int, graceful: dict[str, float]
) -> tuple[list[Outcome], list[Outcome]]:
    """Load, SIGTERM, the clients go on until the server exited; then one attempt each.
    (Every request sent before the last ones, the last ones.) Asserts the exit in time."""
    warm_up(srv, workers)
    phases = graceful.get("DRAIN_DELAY", 0) + graceful["GRACE_PERIOD"] + graceful["CANCEL_TIMEOUT"]
    within = phases + EXIT_MARGIN
    with load(srv) as (stop, outs):
        time.sleep(SIGNAL_AFTER)
        srv.signal()
        try:
            srv.wait_exit(within)
        finally:
            stop.set()
    assert srv.exit_after < within, srv.log()
    sent = [o for out in outs for o in out[:-1]]
    last = [out[-1] for out in outs]
    return sent, last


def assert_nothing_lost(
    srv: Server, workers: int, sent: list[Outcome], last: list[Outcome]
) -> None:
    log = srv.log()
    lost = [o for o in sent if o.kind == LOST]
    summary = f"{breakdown(sent)}; after the exit: {breakdown(last)}"
    assert not lost, f"{len(lost)} lost: {summary}\n{log}"
    assert any(o.kind == OK for o in sent), summary
    assert all(o.closes for o in sent if o.reason == "503"), f"a 503 kept the connection: {summary}"
    gone = (CONNECTION_REFUSED, NO_SOCKET)
    assert all(o.reason in gone for o in last), f"served after the exit: {summary}"
    assert QUEUED_LINE not in log, log
    # Each worker reaches the door once; the last one shuts it (a worker that reached it
    # while a sibling still served leaves it open, and the sibling shuts it later).
    doors = [line for line in log.splitlines() if DOOR_LINE in line]
    assert len(doors) == workers, log
    assert SHUT_LINE in doors[-1], log
    assert all(SHUT_LINE in line or LEFT_OPEN_LINE in line for line in doors), log


# -- 1. nothing lost under load ------------------------------------------------------------


@pytest.mark.parametrize(("server", "workers"), LOADS)
def test_a_deploy_under_load_loses_no_request(server: str, workers: int) -> None:
    with running(server, graceful=PHASES, workers=workers) as srv:
        sent, last = deploy(srv, workers, PHASES)
        assert_nothing_lost(srv, workers, sent, last)


#: Every server kind once on a Unix-domain socket (as behind nginx); two workers (who meet
#: at the path) on most kinds that have them, one on the others.
UNIX_LOADS = [
    ("uvicorn", 2),
    ("hypercorn", 2),
    ("granian", 1),
    ("granian-rsgi", 2),
    ("daphne", 1),
    ("gunicorn-uvicorn", 1),
    ("gunicorn-asgi", 2),
]
REFUSED_AT_PATH_LINE = "new connections refused at "


@pytest.mark.parametrize(("server", "workers"), UNIX_LOADS)
def test_a_deploy_on_a_unix_socket_loses_no_request(server: str, workers: int) -> None:
    """On a Unix-domain socket the path is the door: from CLOSING on a new client is
    refused at connect (a balancer tries its next upstream), what the kernel queued is
    answered, and the path left behind is one every server removes before it binds."""
    with running(server, graceful=PHASES, workers=workers, uds=True) as srv:
        sent, last = deploy(srv, workers, PHASES)
        assert_nothing_lost(srv, workers, sent, last)
        log = srv.log()
        assert srv.uds is not None
        gunicorn = server.startswith("gunicorn")
        # Gunicorn's arbiter unlinks the path before it stops its workers: nothing to refuse.
        assert (REFUSED_AT_PATH_LINE + srv.uds in log) is not gunicorn, log
        assert not [line for line in log.splitlines() if "Traceback" in line or "rror" in line]
        if os.path.lexists(srv.uds):  # what some servers leave, as they leave their own
            assert stat.S_ISSOCK(os.lstat(srv.uds).st_mode)
            assert one_request(srv).reason == CONNECTION_REFUSED


@pytest.mark.parametrize("server", ["uvicorn", "granian-rsgi"])
def test_once_no_newcomer_can_reach_it_a_unix_server_serves_what_still_comes(
    server: str,
) -> None:
    """With its path taken away, what still reaches the server came on a connection it
    had before (queued, or kept alive): served, with ``Connection: close``, not 503 (a
    balancer does not resend a POST it has sent)."""
    with running(server, graceful=PHASES, uds=True) as srv:
        warm_up(srv, 1)
        with srv.connect(CONNECT_TIMEOUT) as kept:
            kept.settimeout(REQUEST_TIMEOUT)
            buffer = bytearray()
            kept.sendall(request_bytes(QUICK_PATH))
            assert read_reply(kept, buffer).status == 200
            began = len(srv.events("slow-begin"))  # the quick ones are /slow/ too
            in_flight = in_background(one_request, srv, "/slow/?s=1.5&size=32768")
            srv.wait_event("slow-begin", count=began + 1)
            srv.signal()
            deadline = time.monotonic() + 5
            while REFUSED_AT_PATH_LINE not in srv.log():
                assert time.monotonic() < deadline, srv.log()
                time.sleep(0.02)
            assert one_request(srv, QUICK_PATH).reason == CONNECTION_REFUSED
            kept.sendall(request_bytes(QUICK_PATH))
            late = read_reply(kept, buffer)
        assert in_flight.result(timeout=10).kind == OK
        srv.wait_exit(EXIT_MARGIN + sum(PHASES.values()))
        assert (late.status, late.closes, len(late.body)) == (200, True, SIZE), srv.log()


# -- 2. a drain delay serves on --------------------------------------------------------------

#: DRAIN_DELAY serves on for a second: requests sent meanwhile must all be served.
DRAINING = {**PHASES, "DRAIN_DELAY": 1, "GRACE_PERIOD": 1}
#: How much of the drain delay is checked: the rest is the margin for a request sent
#: before its end but read by the server after it.
SERVED_FOR = 0.9


@pytest.mark.parametrize(
    ("server", "workers"), [("uvicorn", 2), ("granian", 2), ("granian-rsgi", 2), ("daphne", 1)]
)
def test_a_drain_delay_serves_every_request_before_the_door_shuts(
    server: str, workers: int
) -> None:
    with running(server, graceful=DRAINING, workers=workers) as srv:
        sent, last = deploy(srv, workers, DRAINING)
        assert_nothing_lost(srv, workers, sent, last)
        assert srv.signalled_at is not None
        early = [o for o in sent if 0 <= o.began - srv.signalled_at < SERVED_FOR]
        assert early, breakdown(sent)
        assert all(o.kind == OK for o in early), f"while draining: {breakdown(early)}"
        assert srv.exit_after >= DRAINING["DRAIN_DELAY"], srv.log()


# -- 3. a keep-alive connection is closed cleanly -------------------------------------------


@dataclass(frozen=True)
class KeptAlive:
    replies: list[tuple[float, Reply]]  # (when it was read, the answer), in order
    end: str  # how the connection ended after the answer that said close
    after: list[Outcome]  # the requests on new connections, until the server exited


def keep_alive_across_the_stop(srv: Server) -> KeptAlive:
    """Requests back to back on one keep-alive connection; SIGTERM once it is going; then
    new connections until the server exited."""
    replies: list[tuple[float, Reply]] = []
    request = request_bytes(PATH)
    buffer = bytearray()
    deadline = time.monotonic() + SIGNAL_AFTER + PHASES["GRACE_PERIOD"] + 5
    with srv.connect(CONNECT_TIMEOUT) as sock:
        sock.settimeout(REQUEST_TIMEOUT)
        while True:
            try:
                sock.sendall(request)
                if srv.signalled_at is None and len(replies) >= 3:
                    time.sleep(0.1)  # the signal comes while this request is in flight
                    srv.signal()
                reply = read_reply(sock, buffer)
            except (OSError, Cut) as exc:
                raise AssertionError(
                    f"request {len(replies) + 1} on the kept-alive connection: "
                    f"{failure(exc)}\n{srv.log()}"
                ) from None
            replies.append((time.monotonic(), reply))
            if reply.closes:
                break
            assert time.monotonic() < deadline, "no answer said Connection: close"
        try:
            sock.settimeout(3)
            rest = sock.recv(1)
            end = "EOF" if rest == b"" else f"more bytes: {rest!r}"
        except OSError as exc:
            end = failure(exc)
    after: list[Outcome] = []
    assert srv.proc is not None
    while srv.proc.poll() is None and time.monotonic() < deadline:
        after.append(one_request(srv))
        time.sleep(RETRY_PAUSE)
    return KeptAlive(replies, end, after)


@pytest.mark.parametrize("server", SERVERS)
def test_a_kept_alive_connection_is_told_to_close_and_closed_cleanly(server: str) -> None:
    with running(server, graceful=PHASES) as srv:
        warm_up(srv, 1)
        kept = keep_alive_across_the_stop(srv)
        srv.wait_exit(EXIT_MARGIN + PHASES["GRACE_PERIOD"])
        log = srv.log()
        assert srv.signalled_at is not None
        *before, (last_at, last) = kept.replies
        assert all(reply.status == 200 and not reply.closes for _, reply in before), log
        assert last_at > srv.signalled_at  # told to close by the shutdown, not before
        assert last.status == 200, (last, log)  # the request in flight at the signal
        assert kept.end == "EOF", (kept.end, log)
        assert kept.after, "no request after the kept-alive connection closed"
        assert all(o.kind == REFUSED for o in kept.after), (breakdown(kept.after), log)
        assert all(o.closes for o in kept.after if o.reason == "503"), breakdown(kept.after)


@pytest.mark.parametrize("server", ["uvicorn", "granian-rsgi"])
def test_a_kept_alive_connection_is_served_then_closed_while_draining(server: str) -> None:
    """DRAINING serves, and each answer closes its connection: a balancer's pooled
    connection is given up, so that its next request goes to a server not draining."""
    draining = {**PHASES, "DRAIN_DELAY": 3}
    with running(server, graceful=draining) as srv:
        warm_up(srv, 1)
        with srv.connect(CONNECT_TIMEOUT) as sock:
            sock.settimeout(REQUEST_TIMEOUT)
            buffer = bytearray()
            sock.sendall(request_bytes(QUICK_PATH))
            before = read_reply(sock, buffer)
            srv.signal()
            srv.wait_event("shutdown-started")
            sock.sendall(request_bytes(QUICK_PATH))
            during = read_reply(sock, buffer)
            sock.settimeout(3)
            end = sock.recv(1)
        fresh = one_request(srv, QUICK_PATH)  # still DRAINING: served
        srv.wait_exit(EXIT_MARGIN + sum(draining.values()))
        log = srv.log()
        assert (before.status, before.closes) == (200, False), log
        assert (during.status, during.closes, len(during.body)) == (200, True, SIZE), log
        assert end == b"", log
        assert (fresh.kind, fresh.closes) == (OK, True), (fresh, log)


# -- 4. a rolling restart leaves the door open -------------------------------------------

#: How long a new connection may take to be served while the door must be open (a shut
#: one would drop the SYN: the connect would wait its retransmissions out).
SERVED_WITHIN = 3.0


def gone(pid: int) -> bool:
    """Whether the process exited (a zombie not yet reaped by its parent counts)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_replaced(srv: Server, old: set[int], workers: int, timeout: float = 20) -> None:
    """Until the workers ``old`` ran their shutdown and exited, and ``workers`` new ones
    started."""
    deadline = time.monotonic() + timeout
    while True:
        stopped = {e["pid"] for e in srv.events("shutdown")}
        new = {e["pid"] for e in srv.events("startup")} - old
        if old <= stopped and all(gone(pid) for pid in old) and len(new) >= workers:
            break
        assert time.monotonic() < deadline, f"not replaced in {timeout} s:\n{srv.log()}"
        time.sleep(0.05)
    srv.wait_engaged(len(old) + workers)


def assert_served(srv: Server, times: int = 5) -> None:
    """New connections are served, each within ``SERVED_WITHIN`` s."""
    for _ in range(times):
        outcome = one_request(srv, QUICK_PATH, connect_timeout=SERVED_WITHIN)
        assert outcome.kind == OK, (outcome, srv.log())
        assert time.monotonic() - outcome.began < SERVED_WITHIN, (outcome, srv.log())


def assert_left_open_then_shut(srv: Server) -> None:
    """The door stayed open while workers were replaced; a SIGTERM then stops the server
    and shuts it once, at the end."""
    log = srv.log()
    assert DOOR_LINE not in log.replace(LEFT_OPEN_LINE, ""), log
    srv.signal()
    srv.wait_exit(PHASES["GRACE_PERIOD"] + PHASES["CANCEL_TIMEOUT"] + EXIT_MARGIN)
    doors = [line for line in srv.log().splitlines() if DOOR_LINE in line]
    assert SHUT_LINE in doors[-1], srv.log()


@pytest.mark.parametrize("server", ["gunicorn-uvicorn", "gunicorn-asgi", "uvicorn"])
def test_a_reload_replaces_the_workers_and_leaves_the_door_open(server: str) -> None:
    with running(server, graceful=PHASES, workers=2) as srv:
        warm_up(srv, 2)
        old = {e["pid"] for e in srv.events("startup")}
        srv.signal(signal.SIGHUP)
        srv.signalled_at = None  # the SIGTERM below is the stop
        wait_replaced(srv, old, 2)
        assert_served(srv)
        assert_left_open_then_shut(srv)


@pytest.mark.parametrize("server", ["gunicorn-uvicorn", "gunicorn-asgi"])
def test_a_recycled_worker_leaves_the_door_open(server: str) -> None:
    srv = start_with(Server(server, graceful=PHASES, workers=2), "--max-requests", "20")
    try:
        warm_up(srv, 2)
        old = {e["pid"] for e in srv.events("startup")}
        deadline = time.monotonic() + 20
        while not {e["pid"] for e in srv.events("shutdown")} & old:
            outcome = one_request(srv, QUICK_PATH, connect_timeout=SERVED_WITHIN)
            assert outcome.kind == OK, (outcome, srv.log())
            assert time.monotonic() < deadline, f"no worker recycled:\n{srv.log()}"
        recycled = {e["pid"] for e in srv.events("shutdown")} & old
        wait_replaced(srv, recycled, len(recycled))
        # Stopped by itself (seen by our watch, or told by gunicorn's lifespan), no signal.
        triggers = {e["trigger"] for e in srv.events("shutdown-started") if e["pid"] in recycled}
        assert triggers <= {"recycle", "lifespan"}, (triggers, srv.log())
        assert_served(srv)
        assert_left_open_then_shut(srv)
    finally:
        srv.kill()


# -- 5. an upload refused while closing ------------------------------------------------------

UPLOAD_SIZE = 4 * 1024 * 1024
UPLOAD_CHUNK = 64 * 1024


@pytest.mark.parametrize("server", SERVERS)
def test_an_upload_refused_while_closing_is_read_to_its_end_then_answered(server: str) -> None:
    """A request whose body is still arriving when it is refused: the 503 comes once the
    body has been read, so the server closes a drained connection (closing one with
    unread bytes resets it, and the upload fails with a broken pipe)."""
    with running(server, graceful=PHASES) as srv:
        warm_up(srv, 1)
        holder = srv.connect(CONNECT_TIMEOUT)  # an in-flight request keeps the server in CLOSING
        holder.sendall(request_bytes(f"/slow/?s=1.5&size={SIZE}"))
        time.sleep(0.2)
        srv.signal()
        srv.wait_event("shutdown-started")
        time.sleep(0.1)
        with srv.connect(CONNECT_TIMEOUT) as sock:
            sock.settimeout(REQUEST_TIMEOUT)
            head = (
                f"POST /slow/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {UPLOAD_SIZE}\r\n\r\n"
            )
            sock.sendall(head.encode())
            for _ in range(UPLOAD_SIZE // UPLOAD_CHUNK):  # a broken pipe here fails the test
                sock.sendall(b"x" * UPLOAD_CHUNK)
                time.sleep(0.002)
            reply = read_reply(sock, bytearray())
        assert reply.status == 503 and reply.closes, (reply, srv.log())
        holder.close()
        srv.wait_exit(PHASES["GRACE_PERIOD"] + PHASES["CANCEL_TIMEOUT"] + EXIT_MARGIN)
