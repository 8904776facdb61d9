"""The door on the listening sockets (``_core/door.py``), on real sockets of this machine:
new connections are dropped (TCP) or refused at the path (Unix), queued ones are still
accepted, workers stopping together meet at the door, a sibling serving on keeps it open,
and a shut socket opens again."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_graceful._core import door as the_door
from django_graceful._core.door import Door

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="socket filters and /proc are Linux's"
)
ROOT = Path(__file__).resolve().parent.parent


def connects(sock: socket.socket, timeout: float = 0.5) -> bool:
    """Whether a new connection completes its handshake within ``timeout`` s."""
    try:
        socket.create_connection(sock.getsockname(), timeout=timeout).close()
    except TimeoutError:
        return False
    return True


def queue(sock: socket.socket, count: int) -> list[socket.socket]:
    """``count`` clients the kernel accepts for ``sock``, each having sent its request."""
    clients = []
    for n in range(count):
        client = socket.create_connection(sock.getsockname(), timeout=2)
        client.sendall(b"request %d" % n)
        clients.append(client)
    return clients


@pytest.fixture
def unix_listener() -> Iterator[socket.socket]:
    """A Unix-domain stream socket listening on a path (a short one: ``sun_path`` holds
    107 bytes), closed and removed after the test."""
    folder = tempfile.mkdtemp(prefix="door-", dir="/tmp")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(os.path.join(folder, "app.sock"))
    os.chmod(sock.getsockname(), 0o660)
    sock.listen(64)
    yield sock
    sock.close()
    shutil.rmtree(folder)


def unix_connect(path: str) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(2)
    try:
        client.connect(path)
    except OSError:
        client.close()
        raise
    return client


def test_finds_this_process_listeners_once_each(
    listener: socket.socket, unix_listener: socket.socket
) -> None:
    twice = socket.socket(fileno=os.dup(listener.fileno()))
    with socket.create_connection(listener.getsockname()) as client:
        found = the_door.listening_sockets()
        try:
            names = [sock.getsockname() for sock in found]
        finally:
            for sock in found:
                sock.close()
        client.close()
    twice.close()
    assert names.count(listener.getsockname()) == 1
    assert names.count(unix_listener.getsockname()) == 1
    # a connected socket is not a listener
    assert all(isinstance(name, str) or name[1] != 0 for name in names)


def test_shut_drops_new_connections_and_keeps_the_queued_ones(listener: socket.socket) -> None:
    clients = queue(listener, 3)
    time.sleep(0.05)
    assert the_door.accept_queue(listener) == 3
    assert the_door.attach(listener, the_door.DROP_SYN)
    assert the_door.program_of(listener) == the_door.DROP_SYN
    assert not connects(listener, 0.3)  # the SYN went unanswered
    for n in range(3):
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(2)
            assert conn.recv(64) == b"request %d" % n
            conn.sendall(b"answer")
        clients[n].settimeout(2)
        assert clients[n].recv(64) == b"answer"
        clients[n].close()
    assert the_door.accept_queue(listener) == 0


def test_a_client_waiting_at_a_shut_door_is_refused_once_it_closes(
    listener: socket.socket,
) -> None:
    the_door.attach(listener, the_door.DROP_SYN)
    port = listener.getsockname()[1]
    began = time.monotonic()

    async def connect() -> BaseException | None:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except (OSError, TimeoutError) as exc:
            return exc
        writer.close()
        return None

    async def scenario() -> BaseException | None:
        attempt = asyncio.ensure_future(connect())
        await asyncio.sleep(0.2)
        listener.close()  # the server goes; the SYN retransmitted next meets a closed port
        return await attempt

    outcome = asyncio.run(scenario())
    assert isinstance(outcome, ConnectionRefusedError), outcome
    assert time.monotonic() - began < 4


def test_reopen_takes_our_programs_off_and_leaves_others(listener: socket.socket) -> None:
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(8)
    keep_all_but_ours = ((0x06, 0, 0, 0xFFFF),)
    try:
        the_door.attach(listener, the_door.DROP_SYN)
        the_door.attach(other, keep_all_but_ours)
        assert the_door.reopen() == 1
        assert the_door.program_of(listener) is None
        assert connects(listener)
        assert the_door.program_of(other) == keep_all_but_ours  # not ours: untouched
        the_door.attach(listener, the_door.marker({os.getpid()}))
        assert the_door.reopen() == 0  # a marker is taken off, but was not a shut door
        assert the_door.program_of(listener) is None
    finally:
        other.close()


def test_marker_round_trip() -> None:
    program = the_door.marker({30, 10, 20})
    assert the_door.marked(program) == {10, 20, 30}
    assert the_door.marked(the_door.marker(set())) == set()
    assert the_door.marked(the_door.DROP_SYN) is None
    assert the_door.marked(None) is None
    assert (
        the_door.marked(((0x06, 0, 0, 0xFFFFFFFF), (0x15, 0, 0, 1), (0x06, 0, 0, 0xFFFFFFFF)))
        is None
    )


def test_a_marker_lets_connections_through(listener: socket.socket) -> None:
    assert the_door.attach(listener, the_door.marker({1, 2, 3}))
    assert connects(listener)


def test_alone_it_shuts_and_waits_for_the_queue(listener: socket.socket) -> None:
    clients = queue(listener, 2)
    time.sleep(0.05)

    async def accept_later() -> None:
        await asyncio.sleep(0.1)
        listener.setblocking(True)
        for _ in range(2):
            listener.accept()[0].close()

    async def scenario() -> tuple[Door, int, float]:
        acceptor = asyncio.ensure_future(accept_later())
        began = time.monotonic()
        door, queued = await the_door.shut_the_door(2.0)
        await acceptor
        return door, queued, time.monotonic() - began

    door, queued, took = asyncio.run(scenario())
    assert (door, queued) == (Door.SHUT, 0)
    assert 0.1 <= took < 1.0  # waited for the acceptor, then SETTLE
    assert not connects(listener, 0.3)
    for client in clients:
        client.close()


#: Drops every packet but a SYN: the listener answers SYNs, never sees the ACK that
#: completes a handshake (its filter sees that too), so handshakes stay half done.
HOLD_HANDSHAKES = (
    (0x30, 0, 0, 13),
    (0x54, 0, 0, 0x12),
    (0x15, 0, 1, 0x02),
    (0x06, 0, 0, 0xFFFFFFFF),
    (0x06, 0, 0, 0),
)


def test_a_handshake_half_done_when_the_door_shuts_completes_and_is_answered(
    listener: socket.socket,
) -> None:
    # The client's SYN was answered before the door shut: it counts itself connected and
    # sends its request. Its handshake must complete (a door that dropped it too would
    # leave it to a reset at the close), and the door waits for it to be accepted.
    assert the_door.attach(listener, HOLD_HANDSHAKES)
    client = socket.create_connection(listener.getsockname(), timeout=2)
    client.sendall(b"request")
    time.sleep(0.05)
    assert the_door.accept_queue(listener) == 0
    # sock_diag and /proc/net/tcp (its fallback) agree
    assert the_door.half_open([listener]) == 1
    assert the_door._half_open_in_proc({listener.getsockname()[1]}) == 1
    listener.setblocking(False)
    accepted: list[bytes] = []

    async def acceptor() -> None:
        while not accepted:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                await asyncio.sleep(0.01)
                continue
            with conn:
                conn.settimeout(2)
                accepted.append(conn.recv(64))
                conn.sendall(b"answer")

    async def scenario() -> tuple[Door, int]:
        serving = asyncio.ensure_future(acceptor())
        try:
            return await the_door.shut_the_door(3.0)
        finally:
            serving.cancel()

    assert asyncio.run(scenario()) == (Door.SHUT, 0)
    assert accepted == [b"request"]
    client.settimeout(2)
    assert client.recv(64) == b"answer"
    client.close()
    assert the_door.half_open([listener]) == 0
    assert not connects(listener, 0.3)


def test_connections_left_in_the_queue_are_counted(listener: socket.socket) -> None:
    clients = queue(listener, 2)
    time.sleep(0.05)
    door, queued = asyncio.run(the_door.shut_the_door(0.2))
    assert (door, queued) == (Door.QUEUED, 2)
    for client in clients:
        client.close()


def test_busy_answers_hold_the_door_until_written(listener: socket.socket) -> None:
    answering = {"count": 1}

    async def scenario() -> float:
        asyncio.get_running_loop().call_later(0.2, answering.update, {"count": 0})
        began = time.monotonic()
        await the_door.shut_the_door(2.0, busy=lambda: answering["count"] > 0)
        return time.monotonic() - began

    assert 0.2 <= asyncio.run(scenario()) < 1.0


def test_without_listeners_nothing_is_shut() -> None:
    assert asyncio.run(the_door.shut_the_door(0.1)) == (Door.NONE, 0)


# -- several processes holding one socket (like a server's workers) ---------------------

WORKER = """
import asyncio, socket, sys, time
from django_graceful._core import door as the_door
sock = socket.socket(fileno=int(sys.argv[1]))
print("ready", flush=True)
if sys.argv[2] == "stop":
    sys.stdin.readline()
    door, queued = asyncio.run(the_door.shut_the_door(1.0))
    print(door.name, flush=True)
elif sys.argv[2] == "refuse":
    sys.stdin.readline()
    print(asyncio.run(the_door.refuse_at_paths()), flush=True)
elif sys.argv[2] == "ask":
    sys.stdin.readline()
    print(the_door.parent_holds_listeners(), the_door.shut_now(), flush=True)
else:
    sys.stdin.readline()  # serves on until told
"""


def worker(sock: socket.socket, role: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(sock.fileno()), role],
        pass_fds=[sock.fileno()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def finish(proc: subprocess.Popen[str], timeout: float = 5) -> str:
    out, _ = proc.communicate("\n", timeout=timeout)
    return out.strip()


def test_workers_stopping_together_meet_and_one_door_is_shut(listener: socket.socket) -> None:
    # This test process is the workers' parent, like a server's supervisor: not counted.
    workers = [worker(listener, "stop") for _ in range(3)]
    assert workers[0].stdin is not None
    outcomes = []
    for proc in workers:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
    for proc in workers:
        out, _ = proc.communicate(timeout=5)
        outcomes.append(out.strip())
    assert outcomes == ["SHUT"] * 3
    assert the_door.program_of(listener) == the_door.DROP_SYN
    assert not connects(listener, 0.3)


def test_a_sibling_serving_on_keeps_the_door_open(listener: socket.socket) -> None:
    sibling = worker(listener, "serve")
    stopping = worker(listener, "stop")
    try:
        began = time.monotonic()
        assert finish(stopping) == "SHARED"
        assert time.monotonic() - began < the_door.MEET_WAIT + 1.5
        assert connects(listener)  # the sibling's socket still takes connections
        listener.accept()[0].close()
    finally:
        finish(sibling)
    # The last one to stop is alone: it shuts the door.
    assert finish(worker(listener, "stop")) == "SHUT"


def test_a_worker_sees_its_parent_keep_the_socket_and_leaves_the_door_open(
    listener: socket.socket,
) -> None:
    """A reloader's worker: its parent (this test process) holds the listening socket."""
    assert finish(worker(listener, "ask")) == "True False"
    assert the_door.program_of(listener) is None
    assert connects(listener)
    listener.accept()[0].close()


def test_shut_now_shuts_where_no_other_process_holds_the_socket(
    listener: socket.socket,
) -> None:
    """A worker whose listener is its own (Granian's, on Linux) and whose next worker will
    bind one of its own: the door shuts at once; a sibling's holding it keeps it open."""
    sibling = worker(listener, "serve")
    try:
        assert not the_door.shut_now()
        assert the_door.program_of(listener) is None
    finally:
        finish(sibling)
    try:
        assert the_door.shut_now()
        assert the_door.program_of(listener) == the_door.DROP_SYN
        assert not connects(listener, 0.3)
    finally:
        the_door.reopen()


# -- Unix-domain sockets: the path is the door ------------------------------------------


def test_a_unix_listener_refuses_at_its_path_and_serves_what_is_queued(
    unix_listener: socket.socket,
) -> None:
    path = unix_listener.getsockname()
    clients = [unix_connect(path) for _ in range(2)]
    for n, client in enumerate(clients):
        client.sendall(b"request %d" % n)
    assert the_door.accept_queue(unix_listener) == 2
    # replaced, and no new client can reach this process any more
    assert asyncio.run(the_door.refuse_at_paths()) == ([path], True)
    with pytest.raises(ConnectionRefusedError):
        unix_connect(path)
    # The path stays (a server's unguarded unlink at exit, the next server's bind), as a
    # socket (a stale one, which every server removes before it binds), with its mode.
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    assert [name for name in os.listdir(os.path.dirname(path))] == ["app.sock"]
    for n, client in enumerate(clients):
        conn, _ = unix_listener.accept()
        with conn:
            assert conn.recv(64) == b"request %d" % n
            conn.sendall(b"answer")
        assert client.recv(64) == b"answer"
        client.close()
    assert the_door.accept_queue(unix_listener) == 0


def test_the_door_waits_for_a_unix_listeners_queue(unix_listener: socket.socket) -> None:
    path = unix_listener.getsockname()
    client = unix_connect(path)
    client.sendall(b"request")

    async def scenario() -> tuple[Door, int]:
        asyncio.get_running_loop().call_later(0.1, lambda: unix_listener.accept()[0].close())
        return await the_door.shut_the_door(2.0)

    assert asyncio.run(scenario()) == (Door.SHUT, 0)
    with pytest.raises(ConnectionRefusedError):
        unix_connect(path)
    client.close()


def test_a_unix_listeners_queue_left_at_the_deadline_is_counted(
    unix_listener: socket.socket,
) -> None:
    clients = [unix_connect(unix_listener.getsockname()) for _ in range(3)]
    assert asyncio.run(the_door.shut_the_door(0.2)) == (Door.QUEUED, 3)
    for client in clients:
        client.close()


def test_a_path_another_server_has_bound_meanwhile_is_left_alone(
    unix_listener: socket.socket,
) -> None:
    path = unix_listener.getsockname()
    os.unlink(path)  # as the next server does with a stale socket, before it binds
    successor = subprocess.Popen(
        [sys.executable, "-c", SUCCESSOR, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert successor.stdout is not None and successor.stdout.readline().strip() == "ready"
        # left alone; this socket can no longer be reached (its path leads elsewhere)
        assert asyncio.run(the_door.refuse_at_paths()) == ([], True)
        unix_connect(path).close()  # the successor's clients still get in
    finally:
        successor.communicate("\n", timeout=5)


SUCCESSOR = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.bind(sys.argv[1])
sock.listen(8)
print("ready", flush=True)
sys.stdin.readline()
"""


def test_a_path_already_gone_stays_gone_and_the_queue_is_still_served(
    unix_listener: socket.socket,
) -> None:
    """Gunicorn's arbiter unlinks the path before it stops its workers."""
    path = unix_listener.getsockname()
    client = unix_connect(path)
    os.unlink(path)
    assert asyncio.run(the_door.refuse_at_paths()) == ([], True)
    assert not os.path.exists(path)
    assert the_door.accept_queue(unix_listener) == 1
    unix_listener.accept()[0].close()
    client.close()


def test_an_abstract_address_has_no_path_to_refuse_at() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as abstract:
        abstract.bind(b"\0django-graceful-door-%d" % os.getpid())
        abstract.listen(8)
        client = unix_connect(abstract.getsockname())
        # reachable by its name still: not closed to newcomers
        assert asyncio.run(the_door.refuse_at_paths()) == ([], False)
        assert the_door.accept_queue(abstract) == 1
        abstract.accept()[0].close()
        client.close()


def test_the_kernel_names_a_unix_listeners_path_and_queue(unix_listener: socket.socket) -> None:
    there = os.stat(unix_listener.getsockname())
    client = unix_connect(unix_listener.getsockname())
    assert the_door.unix_diag(unix_listener) == (1, (there.st_ino, there.st_dev))
    client.close()


def test_a_sibling_serving_on_keeps_the_unix_path_and_the_last_one_refuses(
    unix_listener: socket.socket,
) -> None:
    path = unix_listener.getsockname()
    sibling = worker(unix_listener, "serve")
    try:
        assert finish(worker(unix_listener, "refuse")) == "([], False)"
        unix_connect(path).close()
        unix_listener.accept()[0].close()
    finally:
        finish(sibling)
    assert finish(worker(unix_listener, "refuse")) == repr(([path], True))
    with pytest.raises(ConnectionRefusedError):
        unix_connect(path)


def test_a_tcp_listener_beside_keeps_the_process_open_to_newcomers(
    unix_listener: socket.socket, listener: socket.socket
) -> None:
    path = unix_listener.getsockname()
    assert asyncio.run(the_door.refuse_at_paths()) == ([path], False)
    assert connects(listener)
    listener.accept()[0].close()
