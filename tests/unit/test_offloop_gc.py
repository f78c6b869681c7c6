"""The collector thread of `flowforge.offloop_gc`, and the event-loop freeze it exists to prevent."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

from flowforge import offloop_gc
from flowforge.stack.prefect_server import SERVE_OFF_LOOP_GC

# One connection holds SQLite's write lock until the event loop lets it commit; another waits in
# SQLite's busy handler on its own aiosqlite thread. Then the cyclic collector frees a cursor of the
# waiting connection whose statement failed earlier ("database is locked": SQLAlchemy's adaptor
# leaves such cursors unclosed, in a cycle). Prints the loop's longest stall and the outcome.
SCENARIO = r"""
import asyncio, gc, json, os, sys, tempfile, time, weakref
import aiosqlite

BUSY_MS = 3000

async def main():
    path = os.path.join(tempfile.mkdtemp(), "db.sqlite")
    holder = await aiosqlite.connect(path, isolation_level=None)
    victim = await aiosqlite.connect(path, isolation_level=None)
    try:
        await holder.execute("PRAGMA journal_mode = WAL")
        await holder.execute("CREATE TABLE t (x)")
        gc.set_threshold(10**9)  # no collection until the stage is set
        await holder.execute("BEGIN IMMEDIATE")
        await holder.execute("INSERT INTO t VALUES (1)")
        await victim.execute("PRAGMA busy_timeout = 0")
        failed = await victim.cursor()
        try:
            await failed.execute("INSERT INTO t VALUES (0)")
        except Exception:
            pass
        inner = failed._cursor
        cycle = [inner]
        cycle.append(cycle)
        freed = weakref.ref(inner)
        del failed, inner, cycle
        await victim.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        waiting = asyncio.create_task(victim.execute("INSERT INTO t VALUES (2)"))
        await asyncio.sleep(0.3)  # the victim is in its busy wait now

        ticks = [time.monotonic()]
        async def tick():
            while True:
                await asyncio.sleep(0.02)
                ticks.append(time.monotonic())
        ticker = asyncio.create_task(tick())
        async def commit_soon():
            await asyncio.sleep(0.5)
            await holder.execute("COMMIT")
        committed = asyncio.create_task(commit_soon())
        gc.set_threshold(700, 10, 10)
        deadline = time.monotonic() + 20
        while freed() is not None and time.monotonic() < deadline:
            for _ in range(200):
                garbage = []
                garbage.append(garbage)
            await asyncio.sleep(0)
        await committed
        try:
            await waiting
            outcome = "written"
        except Exception as exc:
            outcome = f"failed: {exc}"
        await asyncio.sleep(0.1)
        ticker.cancel()
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        print(json.dumps({"stall": max(gaps), "outcome": outcome, "freed": freed() is None}))
    finally:
        await holder.close()
        await victim.close()

asyncio.run(main())
"""


def run_scenario(tmp_path: Path, *prefix: str) -> dict[str, Any]:
    """Run SCENARIO as the module `scenario` (found on PYTHONPATH), after `prefix`."""
    (tmp_path / "scenario.py").write_text(SCENARIO)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([*prefix, "scenario"], capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_collection_on_the_loop_thread_freezes_the_loop_for_the_busy_timeout(
        tmp_path: Path) -> None:
    """The hazard itself, on plain CPython: if this stops holding, the workaround can go."""
    result = run_scenario(tmp_path, sys.executable, "-m")
    assert result["freed"]
    assert result["stall"] > 2.5, result  # BUSY_MS = 3000
    assert result["outcome"] == "failed: database is locked", result


def test_the_collector_thread_keeps_the_loop_running_and_the_write_succeeds(
        tmp_path: Path) -> None:
    result = run_scenario(tmp_path, *SERVE_OFF_LOOP_GC)
    assert result["freed"]
    assert result["stall"] < 1.0, result
    assert result["outcome"] == "written", result


class Node:
    """A weak-referenceable object to put in cycles."""

    def __init__(self) -> None:
        self.me = self


def test_collector_frees_cycles_on_its_own_thread_and_hands_gc_back() -> None:
    threads: list[str] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            threads.append(threading.current_thread().name)

    collector = offloop_gc.Collector(poll=0.005).start()
    gc.callbacks.append(record)
    try:
        assert not gc.isenabled()
        node = Node()
        freed = weakref.ref(node)
        del node
        deadline = time.monotonic() + 10
        while freed() is not None:
            assert time.monotonic() < deadline, "the collector never freed the cycle"
            for _ in range(100):
                Node()  # each one a cycle: garbage for the young generation
            time.sleep(0.001)
    finally:
        gc.callbacks.remove(record)
        collector.stop()
    assert gc.isenabled()  # stop() gives collection back to CPython
    assert threads and set(threads) == {"flowforge-gc"}
    # Which generation freed it depends on the counts earlier tests left behind: any will do.
    assert sum(collector.collections) > 0


@pytest.mark.parametrize(("counts", "thresholds", "blocks", "expected"), [
    ((10, 0, 0), (700, 10, 10), 100, None),
    ((701, 0, 0), (700, 10, 10), 100, 0),
    ((701, 11, 0), (700, 10, 10), 100, 1),
    ((701, 11, 11), (700, 10, 10), 100, 1),   # the old generation has not grown by a quarter
    ((701, 11, 11), (700, 10, 10), 125, 2),
    ((10**6, 0, 0), (0, 10, 10), 100, None),  # threshold 0: automatic collection is off
])
def test_due_follows_cpythons_rules(monkeypatch: pytest.MonkeyPatch, counts: tuple[int, int, int],
                                    thresholds: tuple[int, int, int], blocks: int,
                                    expected: int | None) -> None:
    collector = offloop_gc.Collector()
    collector._blocks_after_full = 100
    monkeypatch.setattr(offloop_gc.gc, "get_count", lambda: counts)
    monkeypatch.setattr(offloop_gc.gc, "get_threshold", lambda: thresholds)
    monkeypatch.setattr(offloop_gc.sys, "getallocatedblocks", lambda: blocks)
    assert collector.due() == expected


def test_usage_without_a_module() -> None:
    done = subprocess.run([*SERVE_OFF_LOOP_GC], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "usage" in done.stderr
