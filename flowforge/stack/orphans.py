"""Processes a dead child left behind, found and stopped by the supervisor.

Prefect's process worker starts each flow run in a session of its own, and the run's launcher
puts every job in a process group of its own, so killing a dead worker's process group does
not reach them: with the worker gone they were re-parented to PID 1 and ran on. `up` makes
itself the child subreaper (prctl PR_SET_CHILD_SUBREAPER, Linux 3.4+), so such orphans are
re-parented to it instead, where it can see them (their parent is the supervisor, but they are
none of the children it started) and stop their whole process groups.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from flowforge.runtime.executors.processes import stat_fields

PR_SET_CHILD_SUBREAPER = 36
#: Set once this process is the subreaper. Until then a child this process did not start
#: could be anything its host started (a test runner's fixtures), so nothing is stopped.
_subreaper = False


def become_subreaper() -> bool:
    """Make orphaned descendants this process's children; False where the kernel says no."""
    global _subreaper
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        _subreaper = bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        _subreaper = False
    return _subreaper


def _children_not_started(known: Iterable[int]) -> Iterator[tuple[int, list[bytes]]]:
    """This process's children that it did not start, with their `/proc/<pid>/stat` fields
    after the name (state, ppid, pgrp, ...)."""
    me, mine = os.getpid(), set(known)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) not in mine:
            fields = stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == me:
                yield int(entry.name), fields


def adopted(known: Iterable[int]) -> dict[int, int]:
    """`{pid: process group}` of this process's living children that it did not start
    (zombies have nothing left to stop, only to reap: `ended_adopted`)."""
    return {pid: int(fields[2]) for pid, fields in _children_not_started(known)
            if fields[0] != b"Z"}


def flow_run_of(pid: int, markers: Path | None = None) -> str | None:
    """The Prefect flow run a process runs: Prefect's engine process gets PREFECT__FLOW_RUN_ID
    at exec; a warm runner's forked child has no exec of its own (its /proc environ is the fork
    server's), so its worker left the id in `markers/<pid>` (`stack/runner/forking.py`)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        name, _, value = entry.partition(b"=")
        if name == b"PREFECT__FLOW_RUN_ID":
            return value.decode(errors="replace") or None
    if markers is not None:
        with contextlib.suppress(OSError):
            return (markers / str(pid)).read_text().strip() or None
    return None


def reap(pids: Iterable[int]) -> None:
    """Collect the exit status of adopted processes that ended, by PID: never `waitpid(-1)`,
    which would take the status `subprocess` waits for from a child the supervisor started."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def stop_adopted(known: Iterable[int], grace: float = 3.0) -> list[int]:
    """SIGTERM the process group of every adopted orphan, SIGKILL what is left after `grace`,
    and repeat for their own orphans (a flow run's launcher, then its jobs); the PIDs stopped."""
    if not _subreaper:
        return []
    known = set(known)
    stopped: list[int] = []
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline + 5:  # bounded: SIGKILL'd processes go at once
        orphans = adopted(known)
        if not orphans:
            break
        sig = signal.SIGKILL if time.monotonic() >= deadline else signal.SIGTERM
        for pid, group in orphans.items():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if group != os.getpgrp():
                    os.killpg(group, sig)
                else:
                    os.kill(pid, sig)
            if pid not in stopped:
                stopped.append(pid)
        time.sleep(0.05)
        reap(orphans)
    reap(stopped)
    reap(ended_adopted(known))
    return stopped


def ended_adopted(known: Iterable[int]) -> list[int]:
    """This process's zombie children that it did not start: orphans that ended by themselves
    (the warm runner's multiprocessing helpers end when the worker does). `adopted` leaves
    them out, and unreaped they outlive `up` in their process group."""
    return [pid for pid, fields in _children_not_started(known) if fields[0] == b"Z"]


__all__ = ["adopted", "become_subreaper", "ended_adopted", "flow_run_of", "reap", "stop_adopted"]
