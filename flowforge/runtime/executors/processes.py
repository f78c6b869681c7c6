"""Every job process group still running in this flow-run process, so none outlives it.

Executors start each job in its own session (`start_new_session=True`), which keeps a
cancelled flow run's SIGTERM from reaching the job directly, and lets us kill the job with
everything it spawned as one group. The price is that nothing kills those groups for us: when
the flow run ends (finished, crashed, or cancelled by the worker, which Prefect turns into an
exception so `atexit` still runs) `kill_all` does, and `WorkflowRun` calls it on cancellation.
Executors whose jobs are not this process's children (containers, and local jobs started by the
launcher process) hook in with `on_kill_all`, so nothing is left when the process exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()
_live: dict[int, subprocess.Popen[Any]] = {}
_hooks: list[Callable[[], None]] = []
_installed = False


def _install() -> None:
    global _installed
    if not _installed:  # called with _lock held
        atexit.register(kill_all)
        _installed = True


def register(popen: subprocess.Popen[Any]) -> None:
    """Track a process started with `start_new_session=True` (its pid is its group id)."""
    with _lock:
        _live[popen.pid] = popen
        _install()


def on_kill_all(hook: Callable[[], None]) -> None:
    """Also call `hook` whenever every job is killed (run cancelled, flow-run process exits)."""
    with _lock:
        if hook not in _hooks:
            _hooks.append(hook)
        _install()


def unregister(popen: subprocess.Popen[Any]) -> None:
    """Stop tracking a job whose group the executor has already cleaned up."""
    with _lock:
        _live.pop(popen.pid, None)


def live() -> list[int]:
    """Group ids currently tracked; for tests and diagnostics."""
    with _lock:
        return sorted(_live)


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # the pid was reused by someone else's process: not ours to touch
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs.

    `killpg(pgid, 0)` also succeeds for zombies, and an orphaned grandchild stays a zombie
    forever where PID 1 does not reap (some containers), so on Linux /proc is read and zombies
    are ignored; elsewhere the signal probe is the best there is.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:
        return signal_group(pgid, 0)
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = stat_fields(int(entry))
        if fields is not None and len(fields) > 2 and int(fields[2]) == pgid \
                and fields[0] not in (b"Z", b"X"):
            return True
    return False


def stat_fields(pid: int) -> list[bytes] | None:
    """`/proc/<pid>/stat` after the command name (state, ppid, pgrp, session, ...), or None
    when there is no such process or no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    return stat[stat.rfind(b")") + 2:].split()


def terminate_group(pgid: int, grace: float) -> None:
    """SIGTERM the group, wait up to `grace` seconds for it to go, then SIGKILL what is left."""
    if not signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    signal_group(pgid, signal.SIGKILL)


def kill_all(grace: float = 2.0) -> None:
    """Terminate every job this process runs: the hooks' (the launcher's jobs, containers),
    then every tracked group."""
    with _lock:
        hooks = list(_hooks)
    for hook in hooks:
        hook()
    kill_groups(grace)


def kill_groups(grace: float = 2.0) -> None:
    """Terminate every tracked group, all at once so the grace periods overlap."""
    with _lock:
        popens = list(_live.values())
        _live.clear()
    groups = [p.pid for p in popens if signal_group(p.pid, signal.SIGTERM)]
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        time.sleep(0.05)
        groups = [g for g in groups if group_alive(g)]
    for pgid in groups:
        signal_group(pgid, signal.SIGKILL)
    for popen in popens:  # reap our direct children so they do not linger as zombies
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=1)


__all__ = [
    "group_alive",
    "kill_all",
    "kill_groups",
    "live",
    "on_kill_all",
    "register",
    "signal_group",
    "stat_fields",
    "terminate_group",
]
