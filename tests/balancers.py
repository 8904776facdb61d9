"""A rolling restart behind a real balancer: nginx or HAProxy in front of two servers of
one kind, each restarted in turn while clients keep sending through the balancer.

The balancers run with the repository's own recipes (``deploy/nginx.conf``,
``deploy/haproxy.cfg``), filled in with this run's addresses: the servers listen on
127.0.0.1 (a leased port each) or on a Unix socket in a temporary folder, and stay there
across their restarts. The balancer runs as this user, in a folder of its own, in the
foreground; its system service plays no part. A restart is what a process manager (or
Kubernetes) does: SIGTERM, the process given its shutdown budget plus a margin to exit
(``terminationGracePeriodSeconds``: past it, SIGKILL and the restart fails), then the
same command again, and the next server only once the balancer sends to the new one.

Clients (``http.client``: no retry of its own) send, back to back, ``GET``s each on a
fresh connection, and 16 KiB ``POST``s on one kept-alive connection each (a new one only
where the balancer said ``Connection: close``). Each request is ok (a 200 with the whole
body) or an error, with its reason. Shared by tests/test_balancers.py and
bench/balancer.py.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django_graceful._cli.ports import free_port

from .servers import ROOT, Server, budget_of

DEPLOY = ROOT / "deploy"
BALANCERS = ("nginx", "haproxy")
TRANSPORTS = ("tcp", "unix")
#: What a Debian system calls each balancer's package (scripts/_env.sh installs them).
PACKAGES = {"nginx": "nginx", "haproxy": "haproxy"}

#: A request's view: 50 ms, then a body whose length the client checks.
SIZE = 8192
PATH = f"/slow/?s=0.05&size={SIZE}"
POST_BODY = b"p" * 16384
#: A request's bound, the balancer's retries included.
REQUEST_TIMEOUT = 15.0
#: How long the balancer may take to send requests to a server that started again.
BACK_IN_ROTATION = 20.0
#: The margin above the budget a server gets to exit before it is killed (Kubernetes:
#: ``terminationGracePeriodSeconds`` is the budget + 2 s, as ``checkshutdown --budget``
#: prints the least it may be).
KILL_MARGIN = 2.0
#: Plain Django: the test project's views without django_graceful (its own health views
#: answer 200 while the process runs).
PLAIN_APP = "tests.project.asgi_plain:application"
PLAIN_SETTINGS = {"DJANGO_SETTINGS_MODULE": "tests.project.settings_plain"}


def program(balancer: str) -> str | None:
    """The balancer's program (Debian puts both in /usr/sbin, off a user's PATH)."""
    return shutil.which(balancer) or shutil.which(balancer, path="/usr/sbin:/usr/local/sbin")


def missing(balancer: str) -> str | None:
    """Why ``balancer`` cannot run here, or None."""
    if program(balancer) is None:
        return (
            f"{balancer} is not installed: scripts/test installs it with apt-get where it "
            f"runs as root on Debian (apt-get install {PACKAGES[balancer]})"
        )
    return None


# -- where a server listens --------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    """A server's listening address: a TCP port on 127.0.0.1, or a Unix socket's path."""

    port: int | None = None
    path: Path | None = None

    @property
    def transport(self) -> str:
        return "unix" if self.path is not None else "tcp"

    def for_nginx(self) -> str:
        return f"unix:{self.path}" if self.path is not None else f"127.0.0.1:{self.port}"

    def for_haproxy(self) -> str:
        return str(self.path) if self.path is not None else f"127.0.0.1:{self.port}"

    def connect(self, timeout: float) -> socket.socket:
        if self.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(str(self.path))
            except OSError:
                sock.close()
                raise
            return sock
        return socket.create_connection(("127.0.0.1", self.port or 0), timeout=timeout)


class Backend(Server):
    """A server of the test project at a fixed address, one process of it: a restart is
    a new :class:`Backend` at the same address."""

    def __init__(self, server: str, address: Address, **kwargs: Any) -> None:
        uds = str(address.path) if address.path is not None else False
        super().__init__(server, uds=uds, port=address.port, **kwargs)
        self.address = address

    def start(self, *, wait: bool = True, timeout: float = 20) -> Backend:
        if self.address.path is not None:
            # A socket file its last process left behind (not every server removes it).
            self.address.path.unlink(missing_ok=True)
        super().start(wait=wait, timeout=timeout)
        return self

    def wait_ready(self, timeout: float = 20) -> None:
        """Until ``/health/ready/`` answers 200 (a Gunicorn arbiter listens before its
        worker can answer)."""
        request = b"GET /health/ready/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        deadline = time.monotonic() + timeout
        while True:
            answer = b""
            with contextlib.suppress(OSError), self.address.connect(2) as sock:
                sock.sendall(request)
                while chunk := sock.recv(65536):
                    answer += chunk
            if answer.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                return
            assert time.monotonic() < deadline, f"{self.server} not ready:\n{self.log()}"
            time.sleep(0.05)

    def served(self) -> int:
        """How many requests of the clients' views this process finished."""
        return len(self.events("slow-end"))


# -- the balancers -----------------------------------------------------------------------

#: ``${NAME}`` in a recipe: what the recipe leaves to be filled in.
PLACEHOLDER = re.compile(r"\$\{([A-Z_0-9]+)\}")


def fill(text: str, values: dict[str, str]) -> str:
    """``text`` with each ``${NAME}`` replaced (as ``envsubst`` does); every one must be
    given (nginx's own variables are ``$name``, without braces)."""
    left = set(PLACEHOLDER.findall(text)) - set(values)
    assert not left, f"no value for {sorted(left)}"
    return PLACEHOLDER.sub(lambda m: values[m[1]], text)


#: The nginx main configuration around deploy/nginx.conf (an http-level snippet): this
#: run's folder for everything nginx writes, its log with the upstreams each request tried.
NGINX_MAIN = """\
daemon off;
worker_processes 1;
{user}pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format upstreams '$request_method $request_uri $status upstream=[$upstream_addr] '
                         'statuses=[$upstream_status] t=$request_time';
    access_log {dir}/access.log upstreams;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/django.conf;
}}
"""

#: HAProxy's readiness check in the tests: Kubernetes' readinessProbe (periodSeconds,
#: failureThreshold), made fast. The servers' DRAIN_DELAY covers interval x fall + one
#: interval (a check under way at the signal still passes).
CHECK_INTERVAL = 0.2
CHECK_FALL = 2


class Balancer:
    """nginx or HAProxy in the foreground, on a leased port, in front of two servers."""

    def __init__(
        self, balancer: str, backends: tuple[Address, Address], *, retry_posts: bool = False
    ) -> None:
        """``retry_posts``: nginx with ``non_idempotent`` added to the recipe's
        ``proxy_next_upstream``, which then sends a POST it has sent once to another server
        too (what the recipe says to add over TCP)."""
        self.balancer = balancer
        self.dir = Path(tempfile.mkdtemp(prefix=f"graceful-{balancer}-"))
        self.port = free_port()
        self.log_path = self.dir / "balancer.log"
        exe = program(balancer)
        assert exe is not None, missing(balancer)
        self.env = dict(os.environ)
        if balancer == "nginx":
            snippet = fill(
                (DEPLOY / "nginx.conf").read_text(),
                {
                    "LISTEN": f"127.0.0.1:{self.port}",
                    "BACKEND_1": backends[0].for_nginx(),
                    "BACKEND_2": backends[1].for_nginx(),
                },
            )
            if retry_posts:
                assert " http_503;" in snippet
                snippet = snippet.replace(" http_503;", " http_503 non_idempotent;")
            (self.dir / "django.conf").write_text(snippet)
            # As root nginx's workers would run as nobody, who may not reach the sockets.
            user = "user root;\n" if os.geteuid() == 0 else ""
            (self.dir / "nginx.conf").write_text(NGINX_MAIN.format(dir=self.dir, user=user))
            conf = str(self.dir / "nginx.conf")
            self.cmd = [exe, "-p", str(self.dir), "-c", conf, "-e", str(self.dir / "error.log")]
        else:
            self.env.update(
                LISTEN=f"127.0.0.1:{self.port}",
                BACKEND_1=backends[0].for_haproxy(),
                BACKEND_2=backends[1].for_haproxy(),
                CHECK_INTERVAL=f"{CHECK_INTERVAL * 1000:g}ms",
                CHECK_FALL=str(CHECK_FALL),
            )
            self.cmd = [exe, "-db", "-f", str(DEPLOY / "haproxy.cfg")]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10) -> Balancer:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=self.dir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.balancer} exited at its start:\n{self.log()}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            assert time.monotonic() < deadline, f"{self.balancer} not listening:\n{self.log()}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def log(self) -> str:
        """What the balancer logged: its own output, and nginx's error and access logs."""
        parts = []
        for path in (self.log_path, self.dir / "error.log", self.dir / "access.log"):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)


# -- the clients -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    at: float  # time.monotonic() when the request began
    method: str
    ok: bool
    reason: str  # "200", or what went wrong


def outcome_of(conn: http.client.HTTPConnection, method: str) -> tuple[Outcome, bool]:
    """One request on ``conn``; its outcome, and whether the connection may be used again."""
    began = time.monotonic()
    body = POST_BODY if method == "POST" else None
    headers = {"Content-Type": "application/octet-stream"} if body else {}
    if method == "GET":
        headers["Connection"] = "close"
    try:
        conn.request(method, PATH, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        return Outcome(began, method, False, f"{type(exc).__name__}: {exc}"[:120]), False
    if response.status == 200 and len(data) == SIZE:
        return Outcome(began, method, True, "200"), not response.will_close
    return Outcome(began, method, False, f"{response.status} ({len(data)} bytes)"), False


class Clients:
    """``gets`` + ``posts`` clients sending through the balancer until :meth:`stop`."""

    def __init__(self, port: int, gets: int, posts: int) -> None:
        self.port = port
        self.stopped = threading.Event()
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self.run, args=(method,), daemon=True)
            for method in ["GET"] * gets + ["POST"] * posts
        ]

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)

    def run(self, method: str) -> None:
        conn = self.connection()
        while not self.stopped.is_set():
            outcome, reusable = outcome_of(conn, method)
            with self.lock:
                self.outcomes.append(outcome)
            if not reusable or method == "GET":
                conn.close()
                conn = self.connection()
        conn.close()

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(REQUEST_TIMEOUT + 5)
        assert not any(t.is_alive() for t in self.threads), "a client did not end"

    def count(self) -> int:
        with self.lock:
            return len(self.outcomes)

    def errors(self) -> list[Outcome]:
        with self.lock:
            return [o for o in self.outcomes if not o.ok]


def breakdown(outcomes: list[Outcome]) -> str:
    counts = Counter(f"{o.method} {o.reason}" for o in outcomes)
    return ", ".join(f"{n}x {what}" for what, n in sorted(counts.items())) or "none"


# -- a rolling restart ---------------------------------------------------------------------


@dataclass
class Restart:
    """What one server's restart did."""

    stopped: Backend  # the process that was stopped
    started: Backend  # the one started in its place
    exit_code: int
    exit_after: float
    budget: float | None  # what the stopped one announced (None: plain Django)


@dataclass
class RollingRestart:
    """Two servers of ``server`` at ``transport`` addresses behind ``balancer``."""

    balancer: str
    server: str
    transport: str
    graceful: dict[str, float] | None  # None: plain Django (tests.project.asgi_plain)
    retry_posts: bool = False  # True: nginx with non_idempotent
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="graceful-roll-")))
    backends: list[Backend] = field(default_factory=list)
    every: list[Backend] = field(default_factory=list)  # every process started, to kill
    restarts: list[Restart] = field(default_factory=list)
    front: Balancer | None = None

    def address(self, index: int) -> Address:
        if self.transport == "unix":
            return Address(path=self.dir / f"web{index + 1}.sock")
        return Address(port=free_port())

    def backend(self, address: Address, *, wait: bool = True) -> Backend:
        """A server at ``address``, started; with ``wait``, listening and ready."""
        if self.graceful is None:
            backend = Backend(self.server, address, app=PLAIN_APP, env=PLAIN_SETTINGS)
        else:
            backend = Backend(self.server, address, graceful=self.graceful)
        self.every.append(backend)
        backend.start(wait=False)
        if wait:
            self.wait_ready(backend)
        return backend

    @staticmethod
    def wait_ready(backend: Backend) -> None:
        backend.wait_listening()
        backend.wait_ready()

    def __enter__(self) -> RollingRestart:
        try:
            addresses = (self.address(0), self.address(1))
            self.backends = [self.backend(a, wait=False) for a in addresses]  # side by side
            for backend in self.backends:
                self.wait_ready(backend)
            front = Balancer(self.balancer, addresses, retry_posts=self.retry_posts)
            self.front = front.start()
            for backend in self.backends:
                self.wait_in_rotation(backend)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.front is not None:
            self.front.stop()
        for backend in self.every:
            backend.kill()

    def wait_in_rotation(self, backend: Backend, clients: Clients | None = None) -> None:
        """Until the balancer sends requests to ``backend`` (it finished one of the clients'
        views); without clients running, by sending some."""
        assert self.front is not None
        deadline = time.monotonic() + BACK_IN_ROTATION
        while backend.served() == 0:
            if clients is None:  # a GET of our own (the balancer may not send it there)
                conn = http.client.HTTPConnection("127.0.0.1", self.front.port, timeout=5)
                outcome_of(conn, "GET")
                conn.close()
            time.sleep(0.05)
            assert time.monotonic() < deadline, (
                f"{self.balancer} sent nothing to the restarted {self.server} within "
                f"{BACK_IN_ROTATION} s:\n{backend.log()}\n{self.front.log()}"
            )

    def restart(self, index: int, clients: Clients) -> Restart:
        """SIGTERM to server ``index``, its exit within its budget + KILL_MARGIN (else
        SIGKILL, as the kubelet would: the test fails), then the same server again, back
        in the balancer's rotation."""
        old = self.backends[index]
        budget = budget_of(old) if self.graceful is not None else None
        deadline = (budget if budget is not None else 30.0) + KILL_MARGIN
        old.signal(signal.SIGTERM)
        code = old.wait_exit(deadline)
        new = self.backend(old.address)
        self.backends[index] = new
        self.wait_in_rotation(new, clients)
        restart = Restart(old, new, code, old.exit_after, budget)
        self.restarts.append(restart)
        return restart

    def roll(self, gets: int, posts: int, settle: float = 0.3) -> Clients:
        """The clients sending, each server restarted in turn, ``settle`` s of load before
        the first and after the last; the clients, stopped."""
        assert self.front is not None
        with Clients(self.front.port, gets, posts) as clients:
            time.sleep(settle)
            for index in range(len(self.backends)):
                self.restart(index, clients)
            time.sleep(settle)
        return clients

    def logs(self) -> str:
        """Every log of the run, for a failure's message."""
        parts = [f"=== {b.server} {b.cmd}\n{b.log()}" for b in self.every]
        if self.front is not None:
            parts.append(f"=== {self.balancer}\n{self.front.log()}")
        return "\n".join(parts)
