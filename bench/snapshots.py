"""What worker snapshots cost: building and writing one, memory per item, the idle heartbeat,
and ``checkshutdown`` reading many workers.

(a) snapshot cost: 10,000 in-flight tracked requests in this process (each a task parked
    three coroutines deep, as a view under Django's handler), one snapshot built
    (``Publisher.snapshot``) and written (JSON, write-and-rename in a folder): median, p95
    and max of the runs, for three mixes: all young (the common case), all older than
    ``LOCATE_AFTER`` (so ``MAX_LOCATED`` are located), and 100 told to stop among young
    ones. Goal: <= 20 ms to build and write.
(b) memory per tracked item (tracemalloc): a ``Tracked`` entry as GracefulASGI makes it,
    and with the cancellation token GracefulMiddleware gives every request. Goal <= 1 KB.
(c) heartbeat CPU at idle: this process's CPU time over ``--idle`` s of an idle event loop,
    with and without the heartbeat (HEARTBEAT 1 s). Goal <= 1 %.
(d) ``checkshutdown`` with 10 workers x 1,000 items: ``report.check()`` in-process, and
    ``python -m django checkshutdown`` as a user runs it (Django start-up included).
    Goal < 1 s.

Run: ``.venvs/py311/bin/python bench/snapshots.py`` (about a minute); the tables go to
stdout and to bench/results/snapshots-<python>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path: the repository instead (a
# file of bench/ would shadow a package: bench/websockets.py the ``websockets`` package).
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.project.settings_snapshots")

import django  # noqa: E402

django.setup()

from bench.harness import arguments, machine, publish, versions  # noqa: E402
from django_graceful._core.cancellation import CancelReason  # noqa: E402
from django_graceful._core.lifecycle import Lifecycle, reset_lifecycle  # noqa: E402
from django_graceful._core.registry import Tracked  # noqa: E402
from django_graceful._diagnosis import publisher as snapshots  # noqa: E402
from django_graceful._diagnosis import report  # noqa: E402
from django_graceful._diagnosis.snapshot import LOCATE_AFTER  # noqa: E402
from django_graceful._diagnosis.stores import FileStore  # noqa: E402


async def view(release: asyncio.Event) -> None:
    await release.wait()


async def middleware(release: asyncio.Event) -> None:
    await view(release)


async def handler(release: asyncio.Event) -> None:
    await middleware(release)


def track(lifecycle: Lifecycle, n: int, release: asyncio.Event) -> list[Tracked]:
    items = []
    for i in range(n):
        task = asyncio.ensure_future(handler(release))
        item = Tracked("request", f"GET /api/items/{i}/", task=task)
        item.view = "shop.views.items.detail"
        items.append(lifecycle.registry.add(item))
    return items


def stats(samples: list[float]) -> str:
    """``median (p95, max)``."""
    ordered = sorted(samples)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return f"{statistics.median(ordered):.1f} ({p95:.1f}, {ordered[-1]:.1f})"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = fn()
    return (time.perf_counter() - began) * 1000, result


async def snapshot_cost(n: int, runs: int, folder: Path) -> list[str]:
    lifecycle = reset_lifecycle()
    lifecycle.loop = asyncio.get_running_loop()
    store = FileStore(str(folder), "bench", os.getpid())
    store.prepare()
    publisher = snapshots.Publisher(lifecycle, store)
    release = asyncio.Event()
    items = track(lifecycle, n, release)
    await asyncio.sleep(0.1)  # every task parked

    def young() -> None:
        now = time.monotonic()
        for item in items:
            item.started = now

    def old() -> None:
        for item in items:
            item.started = time.monotonic() - 5

    def some_told() -> None:
        young()
        for item in items[:100]:
            item.reason, item.told_at = CancelReason.DISCONNECT, time.monotonic() - 0.5

    lines = [
        f"(a) one snapshot of {n:,} in-flight tracked requests, {runs} runs: "
        "median (p95, max), in ms",
        "",
        "| mix | located | build | JSON | write + rename | total | size |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, prepare in (
        ("all young", young),
        (f"all older than LOCATE_AFTER ({LOCATE_AFTER:g} s)", old),
        ("100 told to stop, the rest young", some_told),
    ):
        builds, dumps, writes, totals = [], [], [], []
        size = located = 0
        for _ in range(runs):
            prepare()  # ages as the mix says, whatever the runs before took
            gc.collect()
            build_ms, (document, _) = timed(lambda: publisher.snapshot())
            dump_ms, text = timed(partial(json.dumps, document, separators=(",", ":")))
            write_ms, _ = timed(partial(store.write, text))
            builds.append(build_ms)
            dumps.append(dump_ms)
            writes.append(write_ms)
            totals.append(build_ms + dump_ms + write_ms)
            size = len(text)
            located = sum("location" in d for d in document["details"].values())
        lines.append(
            f"| {label} | {located} | {stats(builds)} | {stats(dumps)} | {stats(writes)} "
            f"| {stats(totals)} "
            f"| {size / 1024:.0f} KB |"
        )
    release.set()
    await asyncio.sleep(0.1)
    return lines


async def memory_per_item(n: int) -> list[str]:
    release = asyncio.Event()
    tasks = [asyncio.ensure_future(handler(release)) for _ in range(n)]
    whats = [f"GET /api/items/{i}/" for i in range(n)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    bare = [Tracked("request", whats[i], task=tasks[i]) for i in range(n)]
    middle = tracemalloc.take_snapshot()
    for item in bare:
        item.view = "shop.views.items.detail"
        item.token  # noqa: B018  # GracefulMiddleware gives each request its token
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()

    def grown(a: Any, b: Any) -> float:
        return sum(stat.size_diff for stat in b.compare_to(a, "filename")) / n

    release.set()
    await asyncio.gather(*tasks)
    return [
        f"(b) memory per tracked item (tracemalloc, {n:,} items; the request's own task and "
        "strings not counted)",
        "",
        "| item | bytes |",
        "|---|---:|",
        f"| `Tracked` as GracefulASGI makes it | {grown(before, middle):.0f} |",
        f"| + its cancellation token (GracefulMiddleware) | {grown(before, after):.0f} |",
    ]


async def idle_cpu(seconds: float, folder: Path) -> list[str]:
    async def measure(with_heartbeat: bool) -> float:
        lifecycle = reset_lifecycle()
        lifecycle.loop = asyncio.get_running_loop()
        publisher = snapshots.Publisher(
            lifecycle, FileStore(str(folder), "bench-idle", os.getpid())
        )
        if with_heartbeat:
            publisher.start()
        await asyncio.sleep(0.5)
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        share = (time.process_time() - cpu) / (time.monotonic() - wall) * 100
        publisher.stop()
        return share

    without = await measure(False)
    with_ = await measure(True)
    return [
        f"(c) CPU of this process over {seconds:g} s of an idle event loop (HEARTBEAT 1 s, "
        f"loop probed every {snapshots.PROBE_INTERVAL:g} s)",
        "",
        "| | CPU % |",
        "|---|---:|",
        f"| no heartbeat | {without:.3f} |",
        f"| heartbeat | {with_:.3f} |",
        f"| heartbeat's share | {with_ - without:.3f} |",
    ]


async def worker_snapshot(per_worker: int) -> dict[str, Any]:
    """One worker's snapshot: ages 0 .. 100 s (some slow), one in 50 told to stop."""
    lifecycle = reset_lifecycle()
    lifecycle.loop = asyncio.get_running_loop()
    release = asyncio.Event()
    items = track(lifecycle, per_worker, release)
    await asyncio.sleep(0.1)
    for n, item in enumerate(items):
        item.started -= n / 10
        if n % 50 == 0:
            item.tell(CancelReason.DISCONNECT)
            item.told_at = time.monotonic() - 10
    document, _ = snapshots.Publisher(lifecycle, FileStore("unused", "x", 1)).snapshot()
    release.set()
    await asyncio.sleep(0.1)
    return document


def many_workers(document: dict[str, Any], workers: int, folder: Path) -> list[str]:
    folder.mkdir(mode=0o700, exist_ok=True)
    for worker in range(workers):
        host = f"bench-host-{worker % 3}"  # other hosts: alive while they heartbeat
        body = {
            **document,
            "host": host,
            "machine": host,  # not this one: its pids are not looked up here (none is alive)
            "pid": 1000 + worker,
            "time": time.time() + 3600,
        }
        (folder / f"live-{host}-{1000 + worker}.json").write_text(json.dumps(body))

    store = FileStore(str(folder))
    in_process = []
    for _ in range(10):
        ms, checked = timed(lambda: report.check(store))
        in_process.append(ms)
    rows = len(checked.rows)
    env = {**os.environ, "BENCH_STATE_DIR": str(folder), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "django", "checkshutdown"]
    wall, json_wall = [], []
    for _ in range(5):
        for args, into in (([], wall), (["--json"], json_wall)):
            began = time.perf_counter()
            done = subprocess.run(command + args, env=env, capture_output=True, text=True)
            into.append((time.perf_counter() - began) * 1000)
            assert done.returncode == 1, done.stdout + done.stderr
    startup = []
    for _ in range(5):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=env, check=True)
        startup.append((time.perf_counter() - began) * 1000)
    per_worker = len(document["items"]["what"])
    return [
        f"(d) checkshutdown over {workers} workers x {per_worker:,} items "
        f"({rows:,} problem rows): median (p95, max), in ms",
        "",
        "| what | time |",
        "|---|---:|",
        f"| `report.check()` in-process (10 runs) | {stats(in_process)} |",
        f"| `python -m django checkshutdown` (5 runs) | {stats(wall)} |",
        f"| `python -m django checkshutdown --json` (5 runs) | {stats(json_wall)} |",
        f"| of which Python + `django.setup()` alone (5 runs) | {stats(startup)} |",
    ]


async def main(args: argparse.Namespace) -> str:
    header = f"{versions('django', 'asgiref')}, {machine()}"
    with tempfile.TemporaryDirectory(prefix="graceful-bench-") as tmp:
        sections = [
            await snapshot_cost(args.items, args.runs, Path(tmp) / "a"),
            await memory_per_item(args.items),
            await idle_cpu(args.idle, Path(tmp) / "c"),
            many_workers(await worker_snapshot(1000), 10, Path(tmp) / "d"),
        ]
    return "\n\n".join([header, *("\n".join(lines) for lines in sections)]) + "\n"


if __name__ == "__main__":
    parser = arguments(__doc__)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle loop, each")
    text = asyncio.run(main(parser.parse_args()))
    publish(f"snapshots-py{''.join(platform.python_version_tuple()[:2])}.md", text)
