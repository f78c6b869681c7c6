"""Pre-warmed containers, the flow run's side: claim one from the worker's pool, start the job.

A warm container is created and started ahead by the worker's pool (`container_pool`) with
exactly the options a cold one gets (`container.create_options`: no network, read-only root,
no capabilities, non-root, limits), but its command is a waiter: a `python3 -I -S` that
blocks opening a FIFO in its job directory. A flow run claims one over the pool's Unix
socket, writes the job's files into that directory (the bind mount at `/job`, as for a cold
container), attaches to its output and writes the job's argv and environment into the FIFO:
the waiter `exec`s the job in place, so the job is the container's main process (under tini)
and its exit code, OOM kill and timeout are the container's, as for a cold one. After that one
job the container is removed: no container ever runs two jobs.

Labels tie a warm container to what reaps it: `flowforge.warm` (its option set),
`flowforge.warm-owner` (the pool's host, PID and process start time: a pool that is gone
leaves containers nobody will claim), `flowforge.warm-dir` (its directory on the host; once
handed out it holds a `claim` file with the run's id, so a killed flow run's container is
reaped like a cold one of that run).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from flowforge.core.images import runner_image_name
from flowforge.core.targets import ContainerTarget

LABEL_WARM: Final = "flowforge.warm"
LABEL_OWNER: Final = "flowforge.warm-owner"
LABEL_DIR: Final = "flowforge.warm-dir"
#: Where a container sees its job directory, warm or cold.
MOUNT: Final = "/job"
START_FIFO: Final = ".flowforge-start"
CLAIM_FILE: Final = "claim"
#: How long a claim may take before the job goes cold: the pool answers from memory.
CLAIM_TIMEOUT: Final = 2.0
#: How long a just-started warm container may take to reach its FIFO.
START_WAIT: Final = 2.0

# Static code, never user data: the job's argv and environment arrive through the FIFO as JSON.
# The image's environment (PATH...) stays under the job's, as Docker merges a cold one's.
_WAITER: Final = """\
import json, os, sys
with open(sys.argv[1], "rb") as f:
    data = f.read()
if not data:
    sys.exit(0)
spec = json.loads(data)
env = dict(os.environ)
env.update(spec["env"])
try:
    os.execvpe(spec["argv"][0], spec["argv"], env)
except OSError as exc:
    sys.stderr.write(f"cannot run {spec['argv'][0]}: {exc.strerror}\\n")
    sys.exit(127)
"""


def waiter_argv() -> list[str]:
    return ["python3", "-I", "-S", "-c", _WAITER, f"{MOUNT}/{START_FIFO}"]


def pool_key(options: ContainerTarget) -> dict[str, Any]:
    """What a container is created with, of `options`: two jobs whose keys are equal can use
    each other's warm containers (env and timeout are the job's, given at start)."""
    key = options.model_dump(include={"image", "memory", "cpus", "pids_limit", "network",
                                      "workdir", "user", "read_only"})
    key["image"] = options.image or runner_image_name()
    return key


def key_id(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time since boot, in ticks


def owner_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def owner_alive(owner: str) -> bool:
    """Whether the pool that made a warm container still runs; one on another host, or a label
    this code cannot read, counts as alive (not this reaper's to judge)."""
    host, _, rest = owner.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    return _start_time(int(pid)) == started


def run_of(container: Any, run_label: str) -> str | None:
    """The run a job container belongs to: its label, or a warm one's claim; None for a warm
    container nobody has claimed."""
    labels = container.labels
    if run_label in labels:
        return str(labels[run_label])
    directory = labels.get(LABEL_DIR)
    if not directory:
        return None
    try:
        return (Path(directory) / CLAIM_FILE).read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class Claimed:
    """A warm container handed to a job: its id and its directory on the host."""

    id: str
    parent: Path

    @property
    def job_dir(self) -> Path:
        return self.parent / "job"


def claim(socket_path: Path, options: ContainerTarget, run_id: str) -> Claimed | None:
    """A warm container for `options` from the pool at `socket_path`, or None (no pool, none
    ready, an error): the caller then creates one as usual."""
    request = json.dumps({"key": pool_key(options), "run_id": run_id}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CLAIM_TIMEOUT)
            sock.connect(str(socket_path))
            sock.sendall(request)
            with sock.makefile("rb") as answer:
                reply = json.loads(answer.readline() or b"{}")
    except (OSError, ValueError):
        return None
    if not isinstance(reply, dict) or not reply.get("id") or not reply.get("dir"):
        return None
    return Claimed(str(reply["id"]), Path(str(reply["dir"])))


def start(claimed: Claimed, argv: list[str], env: dict[str, str]) -> bool:
    """Hand the waiter the job's argv and environment; False if it is not there to take them
    (the container died or was removed), and nothing was started."""
    fifo = claimed.job_dir / START_FIFO
    deadline = time.monotonic() + START_WAIT
    while True:
        try:  # non-blocking: ENXIO while no reader has the FIFO open, never a hang
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                return False
            time.sleep(0.005)
    data = memoryview(json.dumps({"argv": argv, "env": env}).encode())
    try:
        os.set_blocking(fd, True)
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        return False
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            fifo.unlink()  # the job never sees it
    return True


__all__ = [
    "CLAIM_FILE",
    "LABEL_DIR",
    "LABEL_OWNER",
    "LABEL_WARM",
    "MOUNT",
    "START_FIFO",
    "Claimed",
    "claim",
    "key_id",
    "owner_alive",
    "owner_id",
    "pool_key",
    "run_of",
    "start",
    "waiter_argv",
]
