"""What the drill's server says while it serves: its live snapshots' requests, pids, budget."""

from __future__ import annotations

import urllib.parse
from collections import Counter
from dataclasses import dataclass, field

from ..._core.registry import WorkKind, request_of
from ..snapshot import Unreadable, parse
from ..stores import LIVE, Store, StoreError


@dataclass(slots=True)
class Live:
    """The live snapshots of one host id, summed up."""

    #: GET requests in flight, by path (as :func:`snapshot_path` spells it).
    in_flight: Counter[str] = field(default_factory=Counter)
    #: The workers that published.
    pids: set[int] = field(default_factory=set)
    #: The largest shutdown budget a worker published (None: none did).
    budget: float | None = None


def read(store: Store, host: str) -> Live:
    """What the live snapshots of host id ``host`` say now (nothing, when none are there)."""
    live = Live()
    try:
        documents, _ = store.host_documents(host)
    except StoreError:
        return live
    for document in documents:
        if document.kind != LIVE:
            continue
        try:
            snapshot = parse(document.text)
        except Unreadable:
            continue
        if snapshot["host"] != host or snapshot["report"] != LIVE:
            continue
        live.pids.add(snapshot["pid"])
        if snapshot.get("budget") is not None:
            live.budget = max(live.budget or 0.0, float(snapshot["budget"]))
        kinds, items = snapshot["kinds"], snapshot["items"]
        for kind, what in zip(items["kind"], items["what"], strict=True):
            path = get_path(kinds[kind], what)
            if path is not None:
                live.in_flight[path] += 1
    return live


def get_path(kind: str, what: str) -> str | None:
    """The path of a GET request in a snapshot, or None for other work."""
    if kind != WorkKind.REQUEST:
        return None
    method, path = request_of(what)
    return path if method == "GET" else None


def snapshot_path(url: str) -> str:
    """``url``'s path as a snapshot shows it: decoded, no query string."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path)
