"""Where workers keep their snapshots: files in ``STATE_DIR``, or a Django cache.

Each worker has one *live* snapshot (rewritten every heartbeat, gone when it stops)
and, once it has shut down, one *last* shutdown report (kept ``LAST_TTL``). Stores
hold JSON text only; reading it is ``report.py``'s business. The documents of one host
id can be read, and removed, on their own (``checkshutdown --drill`` does, for the
server it started): how a store names them is known here only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

#: How long a last shutdown report is kept, and how many at most (the newest).
LAST_TTL = 24 * 3600.0
MAX_LAST_REPORTS = 200
#: A file larger than this is not a snapshot of ours (and is not read).
MAX_BYTES = 64 * 1024 * 1024
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
    """One file per worker in a private folder (0700), written atomically (0600)."""

    def __init__(self, folder: str, host: str = "", pid: int = 0) -> None:
        self.folder = folder
        self.host = host
        self.pid = pid
        self.description = f"folder {folder}"

    def _path(self, kind: str, pid: int | None = None) -> str:
        return os.path.join(self.folder, f"{kind}-{safe_name(self.host)}-{pid or self.pid}.json")

    def prepare(self) -> None:
        """Make the folder (0700), and refuse one that another user could have planted."""
        try:
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
            info = os.lstat(self.folder)
        except OSError as exc:
            raise StoreError(f"cannot create {self.folder}: {exc.strerror or exc}") from exc
        if not stat.S_ISDIR(info.st_mode):
            raise StoreError(f"{self.folder} is not a folder (a symlink or a file)")
        if info.st_uid != os.getuid():
            raise StoreError(f"{self.folder} belongs to another user (uid {info.st_uid})")
        if info.st_mode & 0o077:
            os.chmod(self.folder, 0o700)

    def write(self, text: str, *, last: bool = False) -> None:
        """Write and rename, so that a reader sees the old file or the new, never half."""
        final = self._path(LAST if last else LIVE)
        temp = os.path.join(self.folder, f".{os.path.basename(final)}.{secrets.token_hex(4)}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
                if last:  # must outlive the process (and a crash right after)
                    file.flush()
                    os.fsync(file.fileno())
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def remove_live(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(LIVE))

    def tidy(self, alive: Callable[[int], bool]) -> None:
        """On start: a dead worker's live snapshot (of this host) becomes its last report
        unless it left one; last reports past ``LAST_TTL`` or beyond the newest
        ``MAX_LAST_REPORTS``, and stray temp files, go."""
        now = time.time()
        mine = safe_name(self.host)
        self._tidy_names(now, mine, alive)
        reports = []
        for name in os.listdir(self.folder):
            if name.startswith(f"{LAST}-") and FILE_NAME.match(name):
                with contextlib.suppress(OSError):
                    path = os.path.join(self.folder, name)
                    reports.append((os.lstat(path).st_mtime, path))
        for _, path in sorted(reports, reverse=True)[MAX_LAST_REPORTS:]:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _tidy_names(self, now: float, mine: str, alive: Callable[[int], bool]) -> None:
        for name in os.listdir(self.folder):
            path = os.path.join(self.folder, name)
            with contextlib.suppress(OSError):
                if name.startswith(".") and name.endswith(".tmp"):
                    if now - os.lstat(path).st_mtime > 60:
                        os.unlink(path)
                    continue
                match = FILE_NAME.match(name)
                if match is None:
                    continue
                kind, host, pid = match.group(1), match.group(2), int(match.group(3))
                if kind == LAST and now - os.lstat(path).st_mtime > LAST_TTL:
                    os.unlink(path)
                elif kind == LIVE and host == mine and pid != self.pid and not alive(pid):
                    last = os.path.join(self.folder, f"{LAST}-{host}-{pid}.json")
                    if os.path.exists(last) and os.lstat(last).st_mtime >= os.lstat(path).st_mtime:
                        os.unlink(path)
                    else:
                        os.replace(path, last)

    def documents(self) -> tuple[list[Document], list[Skipped]]:
        return self._documents(None)

    def host_documents(self, host: str) -> tuple[list[Document], list[Skipped]]:
        """Host ids that differ only in characters a file name cannot hold share their
        files' names: a reader checks each snapshot's ``host``."""
        return self._documents(safe_name(host))

    def _documents(self, host: str | None) -> tuple[list[Document], list[Skipped]]:
        """The snapshots in the folder (``host``: only those of that file-name host part)."""
        try:
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            raise StoreError(f"no state found: {self.folder} does not exist") from None
        except OSError as exc:
            raise StoreError(f"cannot read {self.folder}: {exc.strerror or exc}") from None
        documents, skipped = [], []
        for name in names:
            match = FILE_NAME.match(name)
            if match is None or (host is not None and match.group(2) != host):
                continue
            path = os.path.join(self.folder, name)
            try:
                text = _read_text(path)
            except FileNotFoundError:
                continue  # the worker stopped (or renamed it) meanwhile
            except (OSError, UnicodeDecodeError, StoreError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                skipped.append(Skipped(path, f"unreadable: {reason}"))
                continue
            documents.append(Document(path, match.group(1), text))
        return documents, skipped

    def forget_host(self, host: str) -> None:
        """Remove the host's files, its workers' temp files too (a write cut short)."""
        mine = safe_name(host)
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot read {self.folder}: {exc.strerror or exc}") from None
        for name in names:
            match = FILE_NAME.match(_final_name(name))
            if match is not None and match.group(2) == mine:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.folder, name))


def _final_name(name: str) -> str:
    """The name a file has once written: ``.live-web-1-42.json.0f0f0f0f.tmp`` (a temp file,
    see ``FileStore.write``) is to be ``live-web-1-42.json``."""
    if name.startswith(".") and name.endswith(".tmp"):
        return name[1:].rsplit(".", 2)[0]
    return name


def _read_text(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise StoreError("not a regular file")
        if info.st_size > MAX_BYTES:
            raise StoreError(f"{info.st_size} bytes, larger than any snapshot")
        return file.read(MAX_BYTES + 1).decode("utf-8")


# -- a Django cache -------------------------------------------------------------------

PREFIX = "django_graceful:"
INDEX_KEY = PREFIX + "index"
#: A live entry not refreshed for this long is dropped from the index.
INDEX_STALE = 600.0
#: How often a worker re-stamps its live entry in the index.
INDEX_REFRESH = 60.0


def live_timeout(heartbeat: float) -> float:
    """How long a live snapshot outlives its worker's last heartbeat."""
    return max(5.0, 3 * heartbeat)


class CacheStore:
    """Snapshots in a Django cache (e.g. Redis) that several hosts share.

    Live entries expire ``live_timeout(HEARTBEAT)`` after the last heartbeat; an index
    entry lists the workers. Concurrent index updates may lose an entry: each worker
    checks its own at every heartbeat and puts it back.
    """

    def __init__(self, alias: str, host: str = "", pid: int = 0, heartbeat: float = 1.0) -> None:
        self.alias = alias
        self.host = host
        self.pid = pid
        self.heartbeat = heartbeat
        self.description = f"cache {alias!r}"
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
        timeout = LAST_TTL if last else live_timeout(self.heartbeat)
        self.cache.set(f"{PREFIX}{kind}:{self._name()}", text, timeout)
        now = time.time()
        if last or now - self._stamped.get(kind, 0.0) > INDEX_REFRESH or not self._listed(kind):

            def add(index: dict[str, dict[str, float]]) -> None:
                index[kind][self._name()] = now

            self._update_index(add)
            self._stamped[kind] = now

    def _listed(self, kind: str) -> bool:
        return self._name() in _parse_index(self.cache.get(INDEX_KEY))[kind]

    def remove_live(self) -> None:
        self.cache.delete(f"{PREFIX}{LIVE}:{self._name()}")
        self._update_index(lambda index: index[LIVE].pop(self._name(), None))

    def _update_index(self, change: Callable[[dict[str, dict[str, float]]], object]) -> None:
        index = _parse_index(self.cache.get(INDEX_KEY))
        change(index)
        now = time.time()
        for kind, stale in ((LIVE, INDEX_STALE), (LAST, LAST_TTL)):
            index[kind] = {k: t for k, t in index[kind].items() if now - t < stale}
        newest = sorted(index[LAST].items(), key=lambda entry: entry[1], reverse=True)
        index[LAST] = dict(newest[:MAX_LAST_REPORTS])
        self.cache.set(INDEX_KEY, json.dumps(index), LAST_TTL)

    def tidy(self, alive: Callable[[int], bool]) -> None:
        pass  # entries expire by themselves

    def documents(self) -> tuple[list[Document], list[Skipped]]:
        return self._documents(None)

    def host_documents(self, host: str) -> tuple[list[Document], list[Skipped]]:
        return self._documents(host)

    def _documents(self, host: str | None) -> tuple[list[Document], list[Skipped]]:
        """The snapshots the index lists (``host``: only those of that host id)."""
        try:
            raw = self.cache.get(INDEX_KEY)
        except Exception as exc:
            raise StoreError(f"cannot read the cache {self.alias!r}: {exc}") from None
        if raw is None:
            raise StoreError(f"no state found in the cache {self.alias!r}")
        index = _parse_index(raw, strict=True)
        keys = {
            f"{PREFIX}{kind}:{name}": kind
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
                continue  # expired: the worker stopped heartbeating
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
                    keys.append(f"{PREFIX}{kind}:{name}")
                    del index[kind][name]

        self._update_index(drop)
        self.cache.delete_many(keys)


def _host_of(name: str) -> str:
    """The host id of an index entry (``host:pid``; a host id may hold a colon)."""
    return name.rpartition(":")[0]


def _parse_index(raw: Any, *, strict: bool = False) -> dict[str, dict[str, float]]:
    """The index entry; an unusable one counts as empty (``strict``: raises)."""
    index: dict[str, dict[str, float]] = {LIVE: {}, LAST: {}}
    try:
        data = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        if strict:
            raise StoreError(f"the cache index {INDEX_KEY!r} is not ours (not a JSON object)")
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
        return CacheStore(settings.STATE_CACHE, host, pid, settings.HEARTBEAT)
    return FileStore(settings.STATE_DIR, host, pid)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    return True
