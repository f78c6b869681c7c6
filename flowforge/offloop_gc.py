"""Cyclic garbage collection on a thread of its own, for the servers FlowForge starts.

`python -m flowforge.offloop_gc MODULE [ARGS...]` runs `python -m MODULE ARGS...` with CPython's
automatic collector switched off and a collector thread doing the same generational collections.

Why: CPython runs the cyclic collector on whichever thread allocates past the threshold, in an
asyncio server nearly always the event-loop thread. Freeing an unreachable sqlite3 cursor resets
its statement, and that waits for the cursor's connection mutex. aiosqlite gives each connection
a thread of its own, and a connection in SQLite's busy wait holds its mutex for up to
busy_timeout (Prefect sets 60 s). SQLAlchemy's aiosqlite adaptor does not close a cursor whose
statement failed ("database is locked"), and the traceback keeps it in a reference cycle. So a
single lock error could freeze the Prefect server's loop for a minute: the transaction holding
the write lock needed the loop to commit, every other writer waited out its busy timeout, and
their errors left more such cursors. Measured with gdb (docs/architecture.md): the loop thread waiting in
`sqlite3_reset` under `gc_collect_main`. On a collector thread that wait blocks only the collector
(the sqlite3 module drops the GIL around it), the holder commits, and the waiter goes on.
"""

from __future__ import annotations

import gc
import runpy
import sys
import threading

POLL_SECONDS = 0.02
# CPython's own rule for the oldest generation: a full collection only once it has grown by a
# quarter since the last one (gcmodule.c, long_lived_pending). Allocated blocks stand in for the
# object count, which Python code cannot read cheaply.
FULL_GROWTH = 1.25


class Collector:
    """Generational collections from a daemon thread, on CPython's thresholds."""

    def __init__(self, poll: float = POLL_SECONDS, full_growth: float = FULL_GROWTH) -> None:
        self.poll = poll
        self.full_growth = full_growth
        self.collections = [0, 0, 0]
        self._blocks_after_full = sys.getallocatedblocks()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def due(self) -> int | None:
        """The generation CPython would collect now, or None."""
        counts, thresholds = gc.get_count(), gc.get_threshold()
        if thresholds[0] == 0:  # gc.set_threshold(0) means no automatic collection at all
            return None
        for gen in (2, 1, 0):
            if counts[gen] > thresholds[gen]:
                if gen == 2 and (sys.getallocatedblocks()
                                 < self._blocks_after_full * self.full_growth):
                    continue
                return gen
        return None

    def collect_once(self) -> int | None:
        gen = self.due()
        if gen is None:
            return None
        gc.collect(gen)
        if gen == 2:
            self._blocks_after_full = sys.getallocatedblocks()
        self.collections[gen] += 1
        return gen

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            self.collect_once()

    def start(self) -> Collector:
        gc.disable()
        self._thread = threading.Thread(target=self._run, name="flowforge-gc", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        gc.enable()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        raise SystemExit("usage: python -m flowforge.offloop_gc MODULE [ARGS...]")
    Collector().start()
    sys.argv = list(args)  # run_module puts the module's path in argv[0], as `python -m` does
    runpy.run_module(args[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
