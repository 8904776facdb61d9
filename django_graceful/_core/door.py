"""Shut the door before the server closes it: no connection is accepted by the kernel and
then reset because the listening socket went away.

When a server closes its listening socket, the kernel resets every connection it had
already accepted on the server's behalf (the accept queue), although those clients had
sent their requests and cannot tell whether they were processed. So, before the server
closes its listeners, every TCP listening socket of this process gets a socket filter
that drops the SYNs that open new connections (classic BPF; Linux, no privilege
needed): new clients go unanswered, so they retransmit and then meet a closed port
(``connection refused``) or the next server on that port, while the connections
already queued are still accepted by the server and answered (503 with ``Connection:
close`` from CLOSING on). Only the SYN is dropped: the listener's filter also sees the
ACK that completes a handshake, and a client whose SYN was answered just before the
door shut already counts itself connected and sends its request, so its handshake must
complete. Once no connection is queued (``TCP_INFO`` of a listening socket gives the
accept queue) nor half-open (``SYN_RECV`` in ``/proc/net/tcp``) the server may close.

The filter is on the socket, shared by every worker that holds it, so the door is shut
only by the last of them: when no other process but this one's parent (the server's
supervisor) holds the socket, or when every other holder has reached the door too.
Workers that reach it together meet there: each adds its pid to a marker program on
the socket (``ret #-1``, which lets everything through, followed by unreachable
``ld #pid`` words), and the first to find every other holder listed shuts the door. A
worker whose siblings serve on (a rolling restart) gives up after ``MEET_WAIT`` s and
leaves the door open. A server that inherits a socket shut by an earlier one (systemd
socket activation, gunicorn's USR2 upgrade) opens it again at startup (``reopen``).
Where the next process will listen on the port on a socket of its own as soon as this
one has stopped (a development server's reload), the door is shut at the stop signal
already (``shut_now``): new clients retry a moment later and meet the next process,
instead of an answer from this one that it is shutting down.

A Unix-domain listener has no handshake to hold back: a connect is queued at once. Its
path is what lets clients in, so the door replaces the path with a socket that listens
to nothing (bound and closed at once, then renamed over the path): a new client is
refused at connect (``ECONNREFUSED``; a balancer such as nginx then tries its next
upstream, a POST included, since nothing was sent), while the connections already
queued are accepted and answered. A refusal costs a client nothing there, unlike a
dropped SYN over TCP, so the lifecycle refuses on paths as soon as CLOSING begins
(``refuse_at_paths``) rather than answering 503 to each newcomer. The path is replaced
only while it still leads to this socket (``sock_diag`` gives the socket's bound inode),
never when another server has bound it meanwhile; a path that is already gone (Gunicorn's
arbiter unlinks it before it stops its workers) is left gone; the servers that remove
the path at their exit find a dead socket there, and so does the next server to bind
it, which removes it as any stale socket. An abstract address has no path: its queue is
still waited for.

Imports nothing of django_graceful. Off Linux it finds no listeners and does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import os
import socket
import stat
import struct
import sys
import time
from collections.abc import Callable

#: ``setsockopt`` options that attach and detach a classic BPF program, and read it back
#: (``<asm-generic/socket.h>``: ``SO_GET_FILTER`` is ``SO_ATTACH_FILTER``).
SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27
#: Where ``tcpi_unacked`` sits in ``struct tcp_info`` (8 one-byte fields, then rto, ato,
#: snd_mss, rcv_mss): for a listening socket, the length of its accept queue.
_UNACKED_OFFSET = 24
_TCP_INFO_SIZE = 104
#: How often the accept queue (and the other holders) are looked at.
POLL = 0.01
#: How long the queue must have stayed empty (and no answer be in progress) before the
#: server may close: time for the last accepted connection's request to reach the app.
SETTLE = 0.05
#: How long a worker waits at the door for the other holders of the socket to reach it.
MEET_WAIT = 0.3
MEET_POLL = 0.03

# Classic BPF words (<linux/filter.h>): BPF_RET|BPF_K, BPF_LD|BPF_IMM, BPF_LD|BPF_B|BPF_ABS,
# BPF_ALU|BPF_AND|BPF_K and BPF_JMP|BPF_JEQ|BPF_K.
_RET = 0x06
_LD_IMM = 0x00
_LDB_ABS = 0x30
_AND_K = 0x54
_JEQ_K = 0x15
#: A TCP socket's filter sees the packet from its TCP header: byte 13 holds the flags.
_TCP_FLAGS = 13
_SYN, _ACK = 0x02, 0x10
#: Longest program read back: the marker holds one word per worker.
_MAX_WORDS = 1024

Word = tuple[int, int, int, int]
#: Drop a SYN without ACK (``ret #0`` keeps no byte), let the rest through (``ret #-1``).
DROP_SYN: tuple[Word, ...] = (
    (_LDB_ABS, 0, 0, _TCP_FLAGS),
    (_AND_K, 0, 0, _SYN | _ACK),
    (_JEQ_K, 0, 1, _SYN),
    (_RET, 0, 0, 0),
    (_RET, 0, 0, 0xFFFFFFFF),
)
#: ``/proc/net/tcp``'s state of a half-open connection (``TCP_SYN_RECV``).
_SYN_RECV = "03"

# sock_diag (<linux/netlink.h>, <linux/sock_diag.h>): the kernel's own lists of sockets.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLMSG_HEADER = struct.Struct("=IHHII")
#: <linux/inet_diag.h>: a dump of the TCP sockets in these states (``TCP_SYN_RECV``; request
#: sockets are ``TCP_NEW_SYN_RECV`` since Linux 4.4): ``struct inet_diag_req_v2``, then
#: each ``struct inet_diag_msg``, whose source port (big-endian) follows its first 4 bytes.
_HALF_OPEN_STATES = (1 << 3) | (1 << 12)
_INET_DIAG_REQ = struct.Struct("=BBBBI48x")
_SOURCE_PORT = struct.Struct("!H")
#: <linux/unix_diag.h>: one socket by its inode, with its bound path's inode (VFS) and, for
#: a listener, its queue (RQLEN), each an attribute after ``struct unix_diag_msg``.
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")
_UDIAG_SHOW_VFS, _UDIAG_SHOW_RQLEN = 0x02, 0x10
_UNIX_DIAG_MSG_SIZE = 16
_UNIX_DIAG_VFS, _UNIX_DIAG_RQLEN = 1, 4
_NO_COOKIE = 0xFFFFFFFF
_ATTRIBUTE = struct.Struct("=HH")
_PAIR = struct.Struct("=II")


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def marker(pids: set[int]) -> tuple[Word, ...]:
    """The program that lets everything through and names the workers at the door."""
    keep_all = (_RET, 0, 0, 0xFFFFFFFF)
    return (keep_all, *((_LD_IMM, 0, 0, pid) for pid in sorted(pids)), keep_all)


def marked(program: tuple[Word, ...] | None) -> set[int] | None:
    """The pids a marker program names (None: not a marker)."""
    if not program or len(program) < 2 or program[0] != program[-1]:
        return None
    if program[0] != (_RET, 0, 0, 0xFFFFFFFF):
        return None
    words = program[1:-1]
    if any(code != _LD_IMM or jt or jf for code, jt, jf, _ in words):
        return None
    return {k for *_, k in words}


def attach(sock: socket.socket, program: tuple[Word, ...]) -> bool:
    """Put ``program`` on ``sock`` (replacing any); False if the kernel refused it."""
    words = (_SockFilter * len(program))(*(_SockFilter(*word) for word in program))
    fprog = _SockFprog(len(program), ctypes.cast(words, ctypes.POINTER(_SockFilter)))
    try:  # the kernel copies the program during the call
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
    except OSError:
        return False
    return True


def program_of(sock: socket.socket) -> tuple[Word, ...] | None:
    """The classic BPF program on ``sock`` (None: none, or unreadable)."""
    try:
        getsockopt = ctypes.CDLL(None, use_errno=True).getsockopt
    except (OSError, AttributeError):
        return None
    buffer = (_SockFilter * _MAX_WORDS)()
    size = ctypes.c_uint(ctypes.sizeof(buffer))
    # SO_GET_FILTER answers in words, not bytes: Python's getsockopt() cannot read it.
    if getsockopt(sock.fileno(), socket.SOL_SOCKET, SO_ATTACH_FILTER, buffer, ctypes.byref(size)):
        return None
    count = min(size.value, _MAX_WORDS)
    if not count:
        return None
    return tuple((w.code, w.jt, w.jf, w.k) for w in buffer[:count])


def listening_sockets() -> list[socket.socket]:
    """A duplicate of each TCP and Unix-domain stream socket this process listens on,
    ordered by identity (close them after use; the server's own sockets stay open). Empty
    where ``/proc/self/fd`` does not exist."""
    if not sys.platform.startswith("linux"):
        return []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    found: list[socket.socket] = []
    for name in names:
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except (OSError, ValueError):  # closed meanwhile, or not a socket after all
            continue
        try:
            listening = (
                sock.family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
                and sock.type == socket.SOCK_STREAM
                and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
            )
        except OSError:
            listening = False
        if listening and all(_inode(sock) != _inode(other) for other in found):
            found.append(sock)
        else:
            sock.close()
    return sorted(found, key=_inode)  # the same order in every process


def _is_unix(sock: socket.socket) -> bool:
    return sock.family == socket.AF_UNIX


def _inode(sock: socket.socket) -> int:
    """The socket's identity across descriptors and processes."""
    return os.fstat(sock.fileno()).st_ino


def accept_queue(sock: socket.socket) -> int:
    """How many connections the kernel has accepted for ``sock`` that the server has not
    taken yet (0 if it cannot tell)."""
    if _is_unix(sock):
        diag = unix_diag(sock)
        return diag[0] if diag is not None else 0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return 0
    if len(info) < _UNACKED_OFFSET + 4:
        return 0
    return int(struct.unpack_from("I", info, _UNACKED_OFFSET)[0])


def _sock_diag(request: bytes, dump: bool = False) -> list[bytes] | None:
    """The kernel's answers to a ``sock_diag`` request: the payload of each message (for a
    dump, until its end). None where netlink does not answer, or answers an error."""
    flags = _NLM_F_REQUEST | (_NLM_F_DUMP if dump else 0)
    header = _NLMSG_HEADER.pack(
        _NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, flags, 1, 0
    )
    payloads: list[bytes] = []
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as link:
            link.settimeout(1)
            link.sendto(header + request, (0, 0))
            while True:
                answer = link.recv(65536)
                offset = 0
                while offset + _NLMSG_HEADER.size <= len(answer):
                    length, kind, *_ = _NLMSG_HEADER.unpack_from(answer, offset)
                    if kind == _NLMSG_ERROR or length < _NLMSG_HEADER.size:
                        return None
                    if kind == _NLMSG_DONE:
                        return payloads
                    payloads.append(answer[offset + _NLMSG_HEADER.size : offset + length])
                    offset += (length + 3) & ~3
                if not dump or not answer:
                    return payloads
    except (OSError, AttributeError):  # no netlink (AttributeError: not Linux)
        return None


def unix_diag(sock: socket.socket) -> tuple[int, tuple[int, int] | None] | None:
    """What the kernel says of a Unix-domain socket: its queue (for a listener, the
    connections not accepted yet) and the inode and device of the path it was bound to
    (None: unbound, or abstract). None where ``sock_diag`` does not answer."""
    request = _UNIX_DIAG_REQ.pack(
        socket.AF_UNIX, 0, 0, 0xFFFFFFFF, _inode(sock),
        _UDIAG_SHOW_VFS | _UDIAG_SHOW_RQLEN, _NO_COOKIE, _NO_COOKIE,
    )  # fmt: skip
    answers = _sock_diag(request)
    if not answers:
        return None
    answer = answers[0]
    queue, path = 0, None
    offset = _UNIX_DIAG_MSG_SIZE
    while offset + _ATTRIBUTE.size <= len(answer):
        size, attribute = _ATTRIBUTE.unpack_from(answer, offset)
        if size < _ATTRIBUTE.size:
            break
        if size >= _ATTRIBUTE.size + _PAIR.size:
            first, second = _PAIR.unpack_from(answer, offset + _ATTRIBUTE.size)
            if attribute == _UNIX_DIAG_RQLEN:
                queue = first
            elif attribute == _UNIX_DIAG_VFS:
                # the kernel's own dev_t: major in the high 12 bits, minor in the low 20
                path = (first, os.makedev(second >> 20, second & 0xFFFFF))
        offset += (size + 3) & ~3
    return queue, path


def half_open(sockets: list[socket.socket]) -> int:
    """How many handshakes the kernel is completing on the ports of ``sockets``
    (connections in ``SYN_RECV``, not yet in the accept queue); 0 if it cannot tell.
    Asked of ``sock_diag`` (the kernel lists only those), else read in ``/proc/net/tcp``
    (every connection of the machine: tens of milliseconds where thousands linger)."""
    ports = set()
    for sock in sockets:
        if _is_unix(sock):
            continue  # a Unix-domain connect has no handshake: queued at once
        with contextlib.suppress(OSError):
            ports.add(sock.getsockname()[1])
    if not ports:
        return 0
    count = 0
    for family in (socket.AF_INET, socket.AF_INET6):
        request = _INET_DIAG_REQ.pack(family, socket.IPPROTO_TCP, 0, 0, _HALF_OPEN_STATES)
        answers = _sock_diag(request, dump=True)
        if answers is None:
            return _half_open_in_proc(ports)
        for answer in answers:
            if len(answer) >= 4 + _SOURCE_PORT.size:
                count += _SOURCE_PORT.unpack_from(answer, 4)[0] in ports
    return count


def _half_open_in_proc(ports: set[int]) -> int:
    wanted = {f":{port:04X}" for port in ports}
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as lines:
                next(lines, None)  # the column titles
                for line in lines:
                    # sl local_address rem_address st ...; the port ends local_address
                    fields = line.split(None, 4)
                    if len(fields) > 3 and fields[3] == _SYN_RECV and fields[1][-5:] in wanted:
                        count += 1
        except OSError:
            continue
    return count


def other_holders(sockets: list[socket.socket], ignore: set[int]) -> set[int]:
    """The processes (but ``ignore`` and this one) that hold one of ``sockets``; only
    processes whose descriptors this one may read (its own user's) are seen."""
    wanted = {f"socket:[{_inode(sock)}]" for sock in sockets}
    found: set[int] = set()
    me = os.getpid()
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return found
    for pid in pids:
        if pid == me or pid in ignore:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    found.add(pid)
                    break
    return found


def parent_holds_listeners() -> bool | None:
    """Whether this process's parent holds one of this process's listening sockets;
    None where it cannot be seen (no listener, no readable ``/proc/<parent>/fd``)."""
    parent = os.getppid()
    sockets = listening_sockets()
    try:
        if not sockets:
            return None
        if parent <= 1:
            return False
        wanted = {f"socket:[{_inode(sock)}]" for sock in sockets}
        try:
            fds = os.listdir(f"/proc/{parent}/fd")
        except OSError:
            return None
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{parent}/fd/{fd}") in wanted:
                    return True
        return False
    finally:
        for sock in sockets:
            sock.close()


def reopen() -> int:
    """Take our programs (the door, or a marker) off every listening socket this process
    holds; return how many were shut. A server that took over a socket from one that
    stopped must get new connections again."""
    reopened = 0
    for sock in listening_sockets():
        with sock:
            program = program_of(sock)
            if program == DROP_SYN or marked(program) is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
                    reopened += program == DROP_SYN
    return reopened


def shut_now() -> bool:
    """Shut the door on every listener of this process at once, where no other process
    holds them (not even the parent, which would hand the next process a shut socket): for
    a stop after which the next process listens on the same port on a socket of its own,
    new clients had better try again a moment later than be answered now.
    ``shut_the_door`` later finds it shut and waits for the queued connections as usual.
    Whether it shut it."""
    sockets = listening_sockets()
    try:
        return bool(sockets) and not other_holders(sockets, set()) and _shut(sockets)
    finally:
        for sock in sockets:
            sock.close()


def _shut(sockets: list[socket.socket]) -> bool:
    """Put the door on every one of ``sockets`` (on a Unix-domain one it only tells the
    other holders that it is shut) and refuse on the paths of the Unix-domain ones; all or
    none: a half-shut server would confuse anyone. Whether it did."""
    if not all(attach(sock, DROP_SYN) for sock in sockets):
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
        return False
    for sock in sockets:
        if _is_unix(sock):
            refuse_at_path(sock)
    return True


def _own_path(sock: socket.socket) -> tuple[str, os.stat_result] | None:
    """The path of the Unix-domain listener ``sock`` and what is there, while the path
    still leads to ``sock`` (None: unbound, abstract, gone, another socket's now, or
    ``sock_diag`` does not answer)."""
    try:
        path = sock.getsockname()
    except OSError:
        return None
    if not isinstance(path, str) or not path:  # unbound, or abstract (bytes)
        return None
    diag = unix_diag(sock)
    try:
        there = os.stat(path)
    except OSError:  # gone already
        return None
    if diag is None or diag[1] != (there.st_ino, there.st_dev):
        return None  # it leads elsewhere now (another server bound it), or cannot tell
    return path, there


def refuse_at_path(sock: socket.socket) -> str | None:
    """Replace the path of the Unix-domain listener ``sock`` with a socket that listens to
    nothing, if the path still leads to ``sock``; return the path replaced (None: none).
    The replacement is renamed over the path (the path is never missing) and gets its
    permissions, so that a client is refused, not told it may not connect."""
    own = _own_path(sock)
    if own is None:
        return None
    path, there = own
    folder, name = os.path.split(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        for spare in (f".{name}.{os.getpid()}.closed", f".graceful-{os.getpid()}"):
            spare_path = os.path.join(folder, spare)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spare_path)
            try:
                dead.bind(spare_path)  # too long a name for sun_path: the shorter one
            except OSError:
                continue
            break
        else:
            spare_path = ""
    try:
        if not spare_path:
            os.unlink(path)  # no spare could be bound: refused as missing instead
            return path
        os.chmod(spare_path, stat.S_IMODE(there.st_mode))
        os.rename(spare_path, path)
    except OSError:
        with contextlib.suppress(OSError):
            if spare_path:
                os.unlink(spare_path)
        return None
    return path


def _reached_at_path(sock: socket.socket) -> bool:
    """Whether a new client can still reach the Unix-domain listener ``sock``: by its
    path (that still leads to it), by an abstract name, or where it cannot be told."""
    try:
        name = sock.getsockname()
    except OSError:
        return True
    if not isinstance(name, str) or not name or unix_diag(sock) is None:
        return True
    return _own_path(sock) is not None


async def refuse_at_paths() -> tuple[list[str], bool]:
    """Refuse new connections on the paths of this process's Unix-domain listeners (see
    ``refuse_at_path``) if it is the last of their holders to stop; the connections
    queued are still accepted, and ``shut_the_door`` waits for them later. The paths
    replaced (none: no such path, or other holders serve on), and whether no new client
    can reach this process any more (every listener a Unix-domain socket whose path no
    longer leads to it): then what reaches the app is what was queued or kept alive."""
    sockets = listening_sockets()
    try:
        unix = [sock for sock in sockets if _is_unix(sock)]
        if not unix or not await _meet_the_others(sockets):
            return [], False
        replaced = [path for sock in unix if (path := refuse_at_path(sock))]
        closed = len(unix) == len(sockets) and not any(_reached_at_path(sock) for sock in unix)
        return replaced, closed
    finally:
        for sock in sockets:
            sock.close()


class Door(enum.Enum):
    """What ``shut_the_door`` did."""

    #: No listener here (or not Linux), or the kernel refused the filter.
    NONE = "no listening socket to shut"
    #: Other processes hold the listeners and serve on: one of them shuts it later.
    SHARED = "left open: other workers still serve on them"
    #: Shut, and every queued connection was accepted and answered in time.
    SHUT = "shut to new connections; every queued connection answered"
    #: Shut, but connections were still queued when the wait ended.
    QUEUED = "shut to new connections; some still queued"


async def shut_the_door(
    timeout: float, busy: Callable[[], bool] = lambda: False
) -> tuple[Door, int]:
    """Refuse new connections on every listener of this process if it is the last
    of their holders to stop (see the module docstring), then wait (at most ``timeout``
    s) until their accept queues are empty and ``busy()`` (answers still being written)
    has been False for ``SETTLE`` s. Returns what it did, and how many connections were
    still queued (0 but for ``Door.QUEUED``)."""
    sockets = listening_sockets()
    try:
        if not sockets:
            return Door.NONE, 0
        if not await _meet_the_others(sockets):
            return Door.SHARED, 0
        if not _shut(sockets):
            return Door.NONE, 0
        return await _drain(sockets, timeout, busy)
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


async def _meet_the_others(sockets: list[socket.socket]) -> bool:
    """Whether every other holder of ``sockets`` (but the parent, unless that is init)
    is gone or waits at the door too, within ``MEET_WAIT`` s."""
    parent = os.getppid()
    ignore = {parent} if parent > 1 else set()
    me = os.getpid()
    first = sockets[0]
    deadline = time.monotonic() + MEET_WAIT
    while True:
        if program_of(first) == DROP_SYN:  # shut already (at the stop signal): no scan
            return True
        others = other_holders(sockets, ignore)
        # Read again after the scan (milliseconds): a sibling may have shut it meanwhile,
        # and a marker put on now would open it again.
        program = program_of(first)
        if not others or program == DROP_SYN:  # alone, or a sibling shut it already
            return True
        waiting = marked(program) or set()
        if others <= waiting:
            return True
        if me not in waiting:
            attach(first, marker((waiting & others) | {me}))
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(MEET_POLL)


async def _drain(
    sockets: list[socket.socket], timeout: float, busy: Callable[[], bool]
) -> tuple[Door, int]:
    """Wait until the queued and half-open connections were accepted and answered. The
    door is kept shut meanwhile: a sibling that read the socket's program just before it
    shut may still put its marker on it (there is no compare-and-set for a filter)."""
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    while True:
        for sock in sockets:
            if program_of(sock) != DROP_SYN:
                attach(sock, DROP_SYN)
        queued = sum(accept_queue(sock) for sock in sockets)
        now = time.monotonic()
        settled = quiet_since is not None and now - quiet_since >= SETTLE
        if not queued and (settled or now >= deadline):
            # /proc/net/tcp lists every connection, and takes the kernel a while to write
            # (milliseconds): read once the queues have stayed empty, not at every poll.
            # Then the accept queues again: a handshake that completed while it was read
            # left the half-open ones for an accept queue.
            queued = half_open(sockets) or sum(accept_queue(sock) for sock in sockets)
        if queued or busy():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif settled:
            return Door.SHUT, 0
        if now >= deadline:
            return (Door.QUEUED, queued) if queued else (Door.SHUT, 0)
        await asyncio.sleep(POLL)
