"""Where workers keep their snapshots: files in ``STATE_DIR``, or a Django cache.

Each worker has one *live* snapshot (rewritten every heartbeat, gone when it stops)
and, once it has shut down, one *last* shutdown report (kept ``LAST_TTL``). Stores
hold JSON text only; reading it is ``report.py``'s business. The documents of one host
id can be read, and removed, on their own (``checkshutdown --drill`` does, for the
server it started): how a store names them is known here only. A reader asks a store
through :class:`BoundedStore`, which gives up on a store that does not answer.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import queue
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

#: How long a last shutdown report is kept, and how many at most (the newest).
LAST_TTL = 24 * 3600.0
MAX_LAST_REPORTS = 200
#: A file larger than this is not a snapshot of ours (and is not read): the largest a
#: worker writes (1,000s of items, ``MAX_LOCATED_LAST`` located) is a few MB.
MAX_BYTES = 16 * 1024 * 1024
#: The most a reader reads of one folder: files, and bytes in all (the rest is skipped).
MAX_FILES = 1000
MAX_TOTAL_BYTES = 64 * 1024 * 1024
#: How ``checkshutdown --drill`` begins the host id of the server it starts.
DRILL_HOST = "drill-"
LIVE, LAST = "live", "last"
FILE_NAME = re.compile(r"^(live|last)-([A-Za-z0-9._-]+)-(\d+)\.json$")


#: Caches that live in one process: another process (checkshutdown) never sees them.
PROCESS_LOCAL_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


class StoreError(Exception):
    """The store cannot be written or read (a one-line reason)."""


@dataclass(frozen=True, slots=True)
class Document:
    """One stored snapshot, as text; ``source`` says where it came from, for messages."""

    source: str
    kind: str  # LIVE or LAST, from where it was stored
    text: str


@dataclass(frozen=True, slots=True)
class Skipped:
    source: str
    reason: str


class Store(Protocol):
    description: str

    def prepare(self) -> None: ...
    def write(self, text: str, *, last: bool = False) -> None: ...
    def remove_live(self) -> None: ...
    def tidy(self, alive: Callable[[int], bool]) -> None: ...
    def documents(self) -> tuple[list[Document], list[Skipped]]: ...

    def host_documents(self, host: str) -> tuple[list[Document], list[Skipped]]:
        """``documents()`` of one host id only (every worker that ran with it)."""
        ...

    def forget_host(self, host: str) -> None:
        """Remove every live snapshot and last report of one host id, and nothing else."""
        ...


def safe_name(host: str) -> str:
    """``host`` as a file-name part (a host id may hold any character)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", host)[:100] or "_"


# -- files ----------------------------------------------------------------------------


class FileStore:
    """One file per worker in a private folder (0700), written atomically (0600).

    Every operation opens the folder without following a symlink and checks it is ours
    (owned by this user, closed to group and others), then works relative to that open
    folder: a folder another user planted, or swapped for a symlink meanwhile, is
    refused (:class:`StoreError`), never written to nor trusted. Reads are capped: a
    file larger than ``MAX_BYTES``, past ``MAX_FILES`` or past ``MAX_TOTAL_BYTES`` is
    skipped with its reason.
    """

    def __init__(self, folder: str, host: str = "", pid: int = 0) -> None:
        self.folder = folder
        self.host = host
        self.pid = pid
        self.description = f"folder {folder}"

    def _name(self, kind: str, pid: int | None = None) -> str:
        return f"{kind}-{safe_name(self.host)}-{pid or self.pid}.json"

    @contextlib.contextmanager
    def _opened(self, *, create: bool = False) -> Iterator[int]:
        """The folder, open (``create``: made first, 0700), once checked to be ours."""
        if create:
            try:
                os.makedirs(self.folder, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create {self.folder}: {exc.strerror or exc}") from None
        fd = open_private_folder(self.folder, repair=create)
        try:
            yield fd
        finally:
            os.close(fd)

    def prepare(self) -> None:
        """Make the folder (0700), and refuse one that another user could have planted."""
        with self._opened(create=True):
            pass

    def write(self, text: str, *, last: bool = False) -> None:
        """Write and rename, so that a reader sees the old file or the new, never half."""
        final = self._name(LAST if last else LIVE)
        temp = f".{final}.{secrets.token_hex(4)}.tmp"
        with self._opened() as folder:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temp, flags, 0o600, dir_fd=folder)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as file:
                    file.write(text)
                    if last:  # must outlive the process (and a crash right after)
                        file.flush()
                        os.fsync(file.fileno())
                os.replace(temp, final, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=folder)
                raise

    def remove_live(self) -> None:
        with self._opened() as folder, contextlib.suppress(FileNotFoundError):
            os.unlink(self._name(LIVE), dir_fd=folder)

    def tidy(self, alive: Callable[[int], bool]) -> None:
        """On start: a dead worker's live snapshot (of this host) becomes its last report
        unless it left one; a dead worker's of a drill's host id (an interrupted drill)
        goes; last reports past ``LAST_TTL`` or beyond the newest ``MAX_LAST_REPORTS``,
        and stray temp files, go."""
        now = time.time()
        with self._opened() as folder:
            self._tidy_names(folder, now, safe_name(self.host), alive)
            reports = []
            for name in os.listdir(folder):
                if name.startswith(f"{LAST}-") and FILE_NAME.match(name):
                    with contextlib.suppress(OSError):
                        reports.append((_lstat(name, folder).st_mtime, name))
            for _, name in sorted(reports, reverse=True)[MAX_LAST_REPORTS:]:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=folder)

    def _tidy_names(self, folder: int, now: float, mine: str, alive: Callable[[int], bool]) -> None:
        for name in os.listdir(folder):
            with contextlib.suppress(OSError):
                if name.startswith(".") and name.endswith(".tmp"):
                    if now - _lstat(name, folder).st_mtime > 60:
                        os.unlink(name, dir_fd=folder)
                    continue
                match = FILE_NAME.match(name)
                if match is None:
                    continue
                kind, host, pid = match.group(1), match.group(2), int(match.group(3))
                if kind == LAST and now - _lstat(name, folder).st_mtime > LAST_TTL:
                    os.unlink(name, dir_fd=folder)
                elif kind == LIVE and host.startswith(DRILL_HOST) and not alive(pid):
                    os.unlink(name, dir_fd=folder)  # its drill is gone: nobody reads it
                elif kind == LIVE and host == mine and pid != self.pid and not alive(pid):
                    last = f"{LAST}-{host}-{pid}.json"
                    with contextlib.suppress(FileNotFoundError):
                        if _lstat(last, folder).st_mtime >= _lstat(name, folder).st_mtime:
                            os.unlink(name, dir_fd=folder)
                            continue
                    os.replace(name, last, src_dir_fd=folder, dst_dir_fd=folder)

    def documents(self) -> tuple[list[Document], list[Skipped]]:
        return self._documents(None)

    def host_documents(self, host: str) -> tuple[list[Document], list[Skipped]]:
        """Host ids that differ only in characters a file name cannot hold share their
        files' names: a reader checks each snapshot's ``host``."""
        return self._documents(safe_name(host))

    def _documents(self, host: str | None) -> tuple[list[Document], list[Skipped]]:
        """The snapshots in the folder (``host``: only those of that file-name host part);
        live snapshots first, at most ``MAX_FILES`` and ``MAX_TOTAL_BYTES``."""
        with self._opened() as folder:
            try:
                names = os.listdir(folder)
            except OSError as exc:
                raise StoreError(f"cannot read {self.folder}: {exc.strerror or exc}") from None
            found = [(match, name) for name in names if (match := FILE_NAME.match(name))]
            found.sort(key=lambda entry: (entry[0].group(1) != LIVE, entry[1]))
            documents: list[Document] = []
            skipped: list[Skipped] = []
            total = 0
            for match, name in found:
                if host is not None and match.group(2) != host:
                    continue
                path = os.path.join(self.folder, name)
                if len(documents) >= MAX_FILES or total >= MAX_TOTAL_BYTES:
                    skipped.append(Skipped(path, _over_cap(len(documents), total)))
                    continue
                try:
                    text = _read_text(name, folder)
                except FileNotFoundError:
                    continue  # the worker stopped (or renamed it) meanwhile
                except (OSError, UnicodeDecodeError, StoreError) as exc:
                    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                    skipped.append(Skipped(path, f"unreadable: {reason}"))
                    continue
                total += len(text)
                documents.append(Document(path, match.group(1), text))
        return documents, skipped

    def forget_host(self, host: str) -> None:
        """Remove the host's files, its workers' temp files too (a write cut short)."""
        mine = safe_name(host)
        if not os.path.lexists(self.folder):
            return
        with self._opened() as folder:
            for name in os.listdir(folder):
                match = FILE_NAME.match(_final_name(name))
                if match is not None and match.group(2) == mine:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=folder)


def open_private_folder(path: str, *, repair: bool = False) -> int:
    """``path`` opened as a folder (never through a symlink), once checked to be this
    user's and closed to others; raises :class:`StoreError` with the reason.

    ``repair``: the writer, who made it, closes a folder others may only read (0755);
    one others may write to could hold anything, and is refused."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise StoreError(f"no state found: {path} does not exist") from None
    except OSError as exc:
        if os.path.islink(path):
            raise StoreError(f"{path} is a symlink, not a folder: refused") from None
        if exc.errno == errno.ENOTDIR:
            raise StoreError(f"{path} is not a folder") from None
        raise StoreError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid():
            raise StoreError(
                f"{path} belongs to another user (uid {info.st_uid}): refused; set "
                "GRACEFUL['STATE_DIR'] to a folder of your own"
            )
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077 and (not repair or mode & 0o022):
            raise StoreError(
                f"{path} is open to other users (mode {mode:o}): refused; "
                f"'chmod 700 {path}' if it is yours"
            )
        if mode & 0o077:
            os.fchmod(fd, 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lstat(name: str, folder: int) -> os.stat_result:
    return os.stat(name, dir_fd=folder, follow_symlinks=False)


def _over_cap(files: int, total: int) -> str:
    if files >= MAX_FILES:
        return f"not read: {MAX_FILES} files read already (the most checkshutdown reads)"
    return f"not read: {total} bytes read already (the most checkshutdown reads)"


def _final_name(name: str) -> str:
    """The name a file has once written: ``.live-web-1-42.json.0f0f0f0f.tmp`` (a temp file,
    see ``FileStore.write``) is to be ``live-web-1-42.json``."""
    if name.startswith(".") and name.endswith(".tmp"):
        return name[1:].rsplit(".", 2)[0]
    return name


def _read_text(name: str, folder: int) -> str:
    """A snapshot file of ours: a regular file, this user's, at most ``MAX_BYTES``."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(name, flags, dir_fd=folder)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise StoreError("not a regular file")
        if info.st_uid != os.getuid():
            raise StoreError(f"belongs to another user (uid {info.st_uid})")
        if info.st_size > MAX_BYTES:
            raise StoreError(f"{info.st_size} bytes, larger than any snapshot ({MAX_BYTES})")
        data = file.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise StoreError(f"more than {MAX_BYTES} bytes, larger than any snapshot")
        return data.decode("utf-8")


# -- a Django cache -------------------------------------------------------------------

PREFIX = "django_graceful:"
INDEX_KEY = PREFIX + "index"
#: How often a worker re-stamps its live entry in the index.
INDEX_REFRESH = 60.0


def live_timeout(heartbeat: float) -> float:
    """How long a worker may go without a heartbeat before a reader on another host
    counts it as gone."""
    return max(5.0, 3 * heartbeat)


class CacheStore:
    """Snapshots in a Django cache (e.g. Redis) that several hosts share.

    Every entry is kept ``LAST_TTL`` after it was written, a live one too: a worker gone
    without its shutdown (killed) leaves its last live snapshot as its last word, as a
    file would (a reader tells a dead worker by its pid on the same machine, elsewhere by
    ``live_timeout`` without a heartbeat). An index entry lists the workers. Concurrent
    index updates may lose an entry: each worker checks its own at every heartbeat and
    puts it back. Keys begin with ``namespace``
    (``open_store``: the project's id), so that projects sharing one cache without a
    ``KEY_PREFIX`` never see each other's workers.
    """

    def __init__(
        self,
        alias: str,
        host: str = "",
        pid: int = 0,
        heartbeat: float = 1.0,
        namespace: str = "",
    ) -> None:
        self.alias = alias
        self.host = host
        self.pid = pid
        self.heartbeat = heartbeat
        self.description = f"cache {alias!r}"
        self._prefix = f"{PREFIX}{namespace}:" if namespace else PREFIX
        self.index_key = f"{self._prefix}index"
        self._stamped: dict[str, float] = {}

    @property
    def cache(self) -> Any:
        from django.core.cache import caches

        return caches[self.alias]

    def _name(self) -> str:
        return f"{self.host}:{self.pid}"

    def prepare(self) -> None:
        pass

    def write(self, text: str, *, last: bool = False) -> None:
        kind = LAST if last else LIVE
        self.cache.set(f"{self._prefix}{kind}:{self._name()}", text, LAST_TTL)
        now = time.time()
        if last or now - self._stamped.get(kind, 0.0) > INDEX_REFRESH or not self._listed(kind):

            def add(index: dict[str, dict[str, float]]) -> None:
                index[kind][self._name()] = now

            self._update_index(add)
            self._stamped[kind] = now

    def _listed(self, kind: str) -> bool:
        return self._name() in _parse_index(self.cache.get(self.index_key))[kind]

    def remove_live(self) -> None:
        self.cache.delete(f"{self._prefix}{LIVE}:{self._name()}")
        self._update_index(lambda index: index[LIVE].pop(self._name(), None))

    def _update_index(self, change: Callable[[dict[str, dict[str, float]]], object]) -> None:
        index = _parse_index(self.cache.get(self.index_key))
        change(index)
        now = time.time()
        for kind in (LIVE, LAST):
            index[kind] = {k: t for k, t in index[kind].items() if now - t < LAST_TTL}
        newest = sorted(index[LAST].items(), key=lambda entry: entry[1], reverse=True)
        index[LAST] = dict(newest[:MAX_LAST_REPORTS])
        self.cache.set(self.index_key, json.dumps(index), LAST_TTL)

    def tidy(self, alive: Callable[[int], bool]) -> None:
        pass  # entries expire by themselves

    def documents(self) -> tuple[list[Document], list[Skipped]]:
        return self._documents(None)

    def host_documents(self, host: str) -> tuple[list[Document], list[Skipped]]:
        return self._documents(host)

    def _documents(self, host: str | None) -> tuple[list[Document], list[Skipped]]:
        """The snapshots the index lists (``host``: only those of that host id)."""
        try:
            raw = self.cache.get(self.index_key)
        except Exception as exc:
            raise StoreError(f"cannot read the cache {self.alias!r}: {exc}") from None
        if raw is None:
            raise StoreError(f"no state found in the cache {self.alias!r}")
        index = _parse_index(raw, strict=True, key=self.index_key)
        keys = {
            f"{self._prefix}{kind}:{name}": kind
            for kind in (LIVE, LAST)
            for name in index[kind]
            if host is None or _host_of(name) == host
        }
        try:
            values = self.cache.get_many(list(keys))
        except Exception as exc:
            raise StoreError(f"cannot read the cache {self.alias!r}: {exc}") from None
        documents, skipped = [], []
        for key, kind in keys.items():
            value = values.get(key)
            source = f"cache {self.alias!r} key {key}"
            if value is None:
                continue  # expired (LAST_TTL), or removed meanwhile (a worker stopped)
            if not isinstance(value, str):
                skipped.append(Skipped(source, f"not a snapshot (a {type(value).__name__})"))
                continue
            documents.append(Document(source, kind, value))
        return documents, skipped

    def forget_host(self, host: str) -> None:
        """Remove the host's entries from the index, then their snapshots."""
        keys: list[str] = []

        def drop(index: dict[str, dict[str, float]]) -> None:
            for kind in (LIVE, LAST):
                for name in [n for n in index[kind] if _host_of(n) == host]:
                    keys.append(f"{self._prefix}{kind}:{name}")
                    del index[kind][name]

        self._update_index(drop)
        self.cache.delete_many(keys)


def _host_of(name: str) -> str:
    """The host id of an index entry (``host:pid``; a host id may hold a colon)."""
    return name.rpartition(":")[0]


def _parse_index(
    raw: Any, *, strict: bool = False, key: str = INDEX_KEY
) -> dict[str, dict[str, float]]:
    """The index entry; an unusable one counts as empty (``strict``: raises)."""
    index: dict[str, dict[str, float]] = {LIVE: {}, LAST: {}}
    try:
        data = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        if strict:
            raise StoreError(f"the cache index {key!r} is not ours (not a JSON object)")
        return index
    for kind in (LIVE, LAST):
        entries = data.get(kind)
        if isinstance(entries, dict):
            index[kind] = {
                k: float(t)
                for k, t in entries.items()
                if isinstance(k, str) and isinstance(t, int | float) and not isinstance(t, bool)
            }
    return index


def open_store(settings: Any, host: str = "", pid: int = 0) -> Store:
    """The store the settings name (``STATE_BACKEND``)."""
    if settings.STATE_BACKEND == "cache":
        from ..conf import project_id

        return CacheStore(settings.STATE_CACHE, host, pid, settings.HEARTBEAT, project_id())
    return FileStore(settings.STATE_DIR, host, pid)


# -- a store read by deadline ---------------------------------------------------------


class _Call:
    """One store call, run by :class:`BoundedStore`'s thread; its outcome once ``done``."""

    __slots__ = ("action", "args", "done", "error", "result")

    def __init__(self, action: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.action = action
        self.args = args
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.action(*self.args)
        except BaseException as exc:  # handed to the caller, who raises it
            self.error = exc
        finally:
            self.done.set()


#: How long ``checkshutdown`` waits for a store call by default (its ``--timeout``).
READ_TIMEOUT = 5.0


class BoundedStore:
    """A store whose every call answers within ``timeout`` seconds, or fails.

    A cache that accepts the connection and never answers (its client's socket timeout
    may be minutes) must not hold a reader: each call runs in a daemon thread of the
    reader's own and is waited for at most ``timeout`` seconds, then
    :class:`StoreError` says the store did not answer. The thread stays stuck in that
    call (it ends with the process), so every later call fails at once with the same
    reason: one wait of ``timeout`` in all. The calls run one at a time, in that one
    thread: a Django cache is opened once, for that thread.
    """

    def __init__(self, store: Store, timeout: float) -> None:
        self.store = store
        self.timeout = timeout
        self.description = store.description
        #: Why the store is given up on (None: it answers).
        self.gave_up: str | None = None
        #: Held by a caller until its call is done or given up on (one call at a time).
        self._lock = threading.Lock()
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _serve(self) -> None:
        while True:
            self._calls.get().run()

    def _call(self, action: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            if self.gave_up is not None:
                raise StoreError(self.gave_up)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="graceful-store-reader", daemon=True
                )
                self._thread.start()
            call = _Call(action, args)
            self._calls.put(call)
            if not call.done.wait(self.timeout):
                self.gave_up = f"{self.description} did not answer within {self.timeout:g} s"
                raise StoreError(self.gave_up)
        if call.error is not None:
            raise call.error
        return call.result

    def prepare(self) -> None:
        self._call(self.store.prepare)

    def write(self, text: str, *, last: bool = False) -> None:
        self._call(functools.partial(self.store.write, last=last), text)

    def remove_live(self) -> None:
        self._call(self.store.remove_live)

    def tidy(self, alive: Callable[[int], bool]) -> None:
        self._call(self.store.tidy, alive)

    def documents(self) -> tuple[list[Document], list[Skipped]]:
        result: tuple[list[Document], list[Skipped]] = self._call(self.store.documents)
        return result

    def host_documents(self, host: str) -> tuple[list[Document], list[Skipped]]:
        result: tuple[list[Document], list[Skipped]] = self._call(self.store.host_documents, host)
        return result

    def forget_host(self, host: str) -> None:
        self._call(self.store.forget_host, host)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (a zombie, dead and not yet
    reaped by its new parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            state = file.read().rpartition(")")[2].split()[:1]
    except OSError:
        return True  # no /proc: kill() is all we know
    return state not in (["Z"], ["X"])
