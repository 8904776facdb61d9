"""The stores, by host id: one host's documents read, and removed, without the others'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.cache import caches

from django_graceful._diagnosis.stores import (
    INDEX_KEY,
    PREFIX,
    CacheStore,
    FileStore,
    StoreError,
    _parse_index,
    open_store,
)
from django_graceful.conf import GracefulSettings

LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "graceful"}
STATE = {"default": LOCMEM, "state": {**LOCMEM, "LOCATION": "graceful-stores"}}


def texts(found: tuple[list[Any], list[Any]]) -> list[tuple[str, str]]:
    documents, _ = found
    return sorted((d.kind, d.text) for d in documents)


# -- files ----------------------------------------------------------------------------


def test_only_the_drills_own_documents_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    names = [
        "live-drill-1a2b3c4d-10.json",
        "last-drill-1a2b3c4d-11.json",
        ".last-drill-1a2b3c4d-11.json.0f0f0f0f.tmp",
        "last-drill-99999999-12.json",  # another drill's
        "last-web-1-13.json",
        "live-web-1-14.json",
        "notes.txt",
    ]
    for name in names:
        (folder / name).write_text("{}")
    FileStore(str(folder)).forget_host("drill-1a2b3c4d")
    assert sorted(p.name for p in folder.iterdir()) == sorted(names[3:])


def test_a_host_whose_id_begins_like_another_keeps_its_files(tmp_path: Path) -> None:
    for host, pid in [("drill-1", 5), ("drill-10", 6), ("drill-1-0", 7)]:
        FileStore(str(tmp_path), host, pid).write(f'"{host}"', last=True)
    store = FileStore(str(tmp_path))
    store.forget_host("drill-1")
    store.forget_host("drill-1")  # twice is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "last-drill-1-0-7.json",
        "last-drill-10-6.json",
    ]
    FileStore(str(tmp_path / "nowhere")).forget_host("drill-1")  # no folder: nothing to do


def test_the_files_of_one_host_are_read_without_the_others(tmp_path: Path) -> None:
    FileStore(str(tmp_path), "web-1", 11).write('"web-1 live"')
    FileStore(str(tmp_path), "web-1", 12).write('"web-1 last"', last=True)
    FileStore(str(tmp_path), "web-10", 13).write('"web-10 live"')
    FileStore(str(tmp_path), "web-2", 14).write('"web-2 last"', last=True)
    (tmp_path / "live-web-2-15.json").mkdir()  # unreadable, and not web-1's
    store = FileStore(str(tmp_path))

    assert texts(store.host_documents("web-1")) == [
        ("last", '"web-1 last"'),
        ("live", '"web-1 live"'),
    ]
    assert store.host_documents("web-1")[1] == []
    assert texts(store.host_documents("elsewhere")) == []
    documents, skipped = store.host_documents("web-2")
    assert [d.text for d in documents] == ['"web-2 last"']
    assert [Path(s.source).name for s in skipped] == ["live-web-2-15.json"]
    assert len(store.documents()[0]) == 4  # all of them, as before

    with pytest.raises(StoreError, match="no state found"):
        FileStore(str(tmp_path / "nowhere")).host_documents("web-1")


def test_a_host_id_unsafe_in_a_file_name_finds_its_files(tmp_path: Path) -> None:
    FileStore(str(tmp_path), "../x y", 7).write('"mine"')
    store = FileStore(str(tmp_path))
    assert texts(store.host_documents("../x y")) == [("live", '"mine"')]
    store.forget_host("../x y")
    assert list(tmp_path.iterdir()) == []


# -- a Django cache -------------------------------------------------------------------


def test_only_the_drills_own_cache_entries_are_removed(tmp_path: Path, settings: Any) -> None:
    caches_setting = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "state": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "cache"),
        },
    }
    settings.CACHES = caches_setting
    for host, pid, last in [("drill-1a2b3c4d", 10, False), ("drill-1a2b3c4d", 11, True)]:
        CacheStore("state", host, pid).write("{}", last=last)
    CacheStore("state", "web-1", 12).write("{}", last=True)
    CacheStore("state", "web-1", 13).write("{}")
    store = CacheStore("state")
    store.forget_host("drill-1a2b3c4d")
    index = _parse_index(store.cache.get(INDEX_KEY))
    assert {kind: sorted(entries) for kind, entries in index.items()} == {
        "live": ["web-1:13"],
        "last": ["web-1:12"],
    }
    assert store.cache.get(f"{PREFIX}last:drill-1a2b3c4d:11") is None
    assert store.cache.get(f"{PREFIX}live:drill-1a2b3c4d:10") is None
    assert store.cache.get(f"{PREFIX}last:web-1:12") == "{}"


def test_the_cache_entries_of_one_host_are_read_without_the_others(settings: Any) -> None:
    settings.CACHES = STATE
    caches["state"].clear()
    CacheStore("state", "web", 11).write('"web live"')
    CacheStore("state", "web", 12).write('"web last"', last=True)
    CacheStore("state", "web:1", 13).write('"web:1 live"')  # a host id may hold a colon
    CacheStore("state", "web-2", 14).write('"web-2 live"')
    caches["state"].set(f"{PREFIX}live:web-2:14", {"not": "text"})
    store = CacheStore("state")

    assert texts(store.host_documents("web")) == [("last", '"web last"'), ("live", '"web live"')]
    assert store.host_documents("web")[1] == []
    assert texts(store.host_documents("web:1")) == [("live", '"web:1 live"')]
    assert texts(store.host_documents("elsewhere")) == []
    documents, skipped = store.host_documents("web-2")
    assert documents == [] and [s.reason for s in skipped] == ["not a snapshot (a dict)"]

    caches["state"].clear()
    with pytest.raises(StoreError, match="no state found"):
        store.host_documents("web")


def test_forgetting_a_host_in_the_cache_keeps_a_host_named_like_it(settings: Any) -> None:
    settings.CACHES = STATE
    caches["state"].clear()
    CacheStore("state", "web", 11).write('"web live"')
    CacheStore("state", "web", 12).write('"web last"', last=True)
    CacheStore("state", "web:1", 13).write('"web:1 live"')
    CacheStore("state", "web-1", 14).write('"web-1 last"', last=True)
    store = CacheStore("state")

    store.forget_host("web")
    store.forget_host("web")  # twice is fine

    assert texts(store.documents()) == [("last", '"web-1 last"'), ("live", '"web:1 live"')]
    assert caches["state"].get(f"{PREFIX}live:web:11") is None
    assert caches["state"].get(f"{PREFIX}last:web:12") is None
    caches["state"].clear()


def test_two_projects_sharing_one_cache_without_a_key_prefix_do_not_see_each_other(
    settings: Any,
) -> None:
    settings.CACHES = STATE
    caches["state"].clear()
    graceful = GracefulSettings(STATE_BACKEND="cache", STATE_CACHE="state")
    settings.SECRET_KEY = "shop"
    open_store(graceful, "web-1", 11).write('{"shop": "live"}')
    shop = open_store(graceful)
    settings.SECRET_KEY = "blog"
    blog = open_store(graceful)
    with pytest.raises(StoreError, match="no state found"):
        blog.documents()
    open_store(graceful, "web-1", 22).write('{"blog": "live"}')
    assert texts(blog.documents()) == [("live", '{"blog": "live"}')]
    settings.SECRET_KEY = "shop"
    assert texts(shop.documents()) == [("live", '{"shop": "live"}')]
