"""The worker's pool of pre-warmed containers (`FLOWFORGE_CONTAINER_WARM` per option set).

The warm runner (`flowforge.stack.runner`) owns one for its life and tells the flow runs it
forks where its Unix socket is (`FLOWFORGE_CONTAINER_POOL`); a flow run's container executor
claims a container over it (`warm_containers.claim`) and falls back to creating one when the
pool has none. The pool lives in the worker, not in a flow run, because a flow run is over
before a container made for it pays off; it lives behind a socket, not in Docker alone,
because handing a container to exactly one job needs one owner deciding.

Option sets are learned: the default one (the runner image, default hardening) is warmed at
start when that image is in the engine; any other is warmed after its first cold job, up to
`MAX_KEYS` sets, the least recently used dropped first. A set whose image tag now names
another image is drained at the next claim or check. On close every container not handed out
is removed; what a killed pool leaves is removed by any reaper (`docker_engine.reap`: its owner
is gone).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socketserver
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from flowforge.core.targets import ContainerTarget
from flowforge.runtime.executors import warm_containers as warm
from flowforge.runtime.executors.docker_engine import (
    LABEL_PREFECT,
    LABEL_RUN,
    create_options,
    docker_client,
    prefect_api_url,
    reap_in_background,
    remove,
)

logger = logging.getLogger("flowforge.container_pool")
MAX_KEYS: Final = 8
#: How often the keeper checks images and refills without being woken.
CHECK_SECONDS: Final = 5.0
#: A set whose containers fail this many times in a row (an image without python3, an
#: engine restarting) is left cold for RETRY_SECONDS, then tried again.
MAX_FAILURES: Final = 3
RETRY_SECONDS: Final = 60.0


@dataclass
class _Warm:
    container: Any
    parent: Path


@dataclass
class _Set:
    """The warm containers of one option set."""

    options: ContainerTarget
    image: str
    image_id: str | None = None
    free: deque[_Warm] = field(default_factory=deque)
    last_used: float = field(default_factory=time.monotonic)
    failures: int = 0
    retry_at: float = 0.0
    misses: int = 0

    def failed(self) -> None:
        """One more failure in a row (locked); the set rests after MAX_FAILURES."""
        self.failures += 1
        if self.failures >= MAX_FAILURES:
            self.failures = 0
            self.retry_at = time.monotonic() + RETRY_SECONDS

    def due(self, size: int) -> bool:
        return len(self.free) < size and time.monotonic() >= self.retry_at


class ContainerPool:
    """Keeps `size` started containers per option set and hands each to one job."""

    def __init__(self, size: int, *, client: Any = None, job_root: Path | None = None) -> None:
        self.size = size
        self.job_root = job_root
        self.owner = warm.owner_id()
        self.socket_path: Path | None = None
        self._client = client
        self._sets: dict[str, _Set] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopped = False
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._threads: list[threading.Thread] = []
        self._removing: list[threading.Thread] = []
        self.claims = 0  # containers handed out, for tests and the curious

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client

    # -- life ---------------------------------------------------------------------------------

    def start(self) -> bool:
        """Listen and start warming; False (and nothing started) without a Docker engine."""
        if self.size <= 0:
            return False
        try:
            self.client.ping()
        except Exception as exc:  # the SDK's own errors: no engine here
            logger.info("no pre-warmed containers: Docker engine not reachable (%s)", exc)
            return False
        directory = Path(tempfile.mkdtemp(prefix="flowforge-pool-"))  # 0700: ours alone
        self.socket_path = directory / "pool.sock"
        pool = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    request = json.loads(self.rfile.readline())
                    got = pool.claim(ContainerTarget.model_validate(request["key"]),
                                     str(request.get("run_id", "")))
                except Exception as exc:  # a bad request gets no container, not a crash
                    logger.warning("container pool: bad claim: %s", exc)
                    got = None
                answer = {"id": got.id, "dir": str(got.parent)} if got else {"id": None}
                self.wfile.write(json.dumps(answer).encode() + b"\n")

        self._server = socketserver.ThreadingUnixStreamServer(str(self.socket_path), Handler)
        self._server.daemon_threads = True
        default = ContainerTarget()
        with contextlib.suppress(Exception):  # warm the default set only if its image is here
            self.client.images.get(warm.pool_key(default)["image"])
            with self._lock:
                self._set_for(default)
        for target, name in ((self._server.serve_forever, "flowforge-pool-socket"),
                             (self._keep, "flowforge-pool-keeper")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        reap_in_background(keep="")  # what a killed pool (or run) of this Prefect left
        return True

    def close(self) -> None:
        """Remove every container not handed out; stop listening."""
        with self._lock:
            self._stopped = True
            self._wake.notify_all()
            sets = list(self._sets.values())
            self._sets.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=30)
        with self._lock:
            removing = list(self._removing)
        for thread in removing:
            thread.join(timeout=30)
        self._sweep(sets, everything=True)
        if self.socket_path is not None:
            shutil.rmtree(self.socket_path.parent, ignore_errors=True)

    # -- claims -------------------------------------------------------------------------------

    def claim(self, options: ContainerTarget, run_id: str) -> warm.Claimed | None:
        """A started container of `options`' set, now `run_id`'s; None if none is ready (the
        set is then warmed for next time)."""
        with self._lock:
            if self._stopped:
                return None
            entry = self._set_for(options)
            entry.last_used = time.monotonic()
            self._wake.notify_all()
        if self._image_changed(entry):
            return None
        while True:
            with self._lock:
                if not entry.free:
                    entry.misses += 1
                    return None
                got = entry.free.popleft()
                self._wake.notify_all()  # refill
            try:  # removed under us (gc --all), or died: not for a job
                got.container.reload()
                running = got.container.status == "running"
            except Exception:
                running = False
            if running:
                (got.parent / warm.CLAIM_FILE).write_text(run_id)
                with self._lock:
                    entry.failures = 0
                    self.claims += 1
                return warm.Claimed(got.container.id, got.parent)
            self._failed(entry, [got])

    def prewarm(self, options: ContainerTarget) -> None:
        """Keep containers of `options`' set ready from now on (as after a first miss)."""
        with self._lock:
            self._set_for(options)

    def ready(self, options: ContainerTarget) -> int:
        """How many containers of `options`' set are ready now."""
        with self._lock:
            entry = self._sets.get(warm.key_id(warm.pool_key(options)))
            return len(entry.free) if entry else 0

    def misses_of(self, options: ContainerTarget) -> int:
        """How many claims of `options`' set found none ready."""
        with self._lock:
            entry = self._sets.get(warm.key_id(warm.pool_key(options)))
            return entry.misses if entry else 0

    def _set_for(self, options: ContainerTarget) -> _Set:
        """The set of `options`, made (and the least used beyond MAX_KEYS dropped). Locked."""
        key = warm.pool_key(options)
        kid = warm.key_id(key)
        entry = self._sets.get(kid)
        if entry is None:
            entry = self._sets[kid] = _Set(options=options, image=key["image"])
            if len(self._sets) > MAX_KEYS:
                oldest = min(self._sets, key=lambda k: self._sets[k].last_used)
                dropped = self._sets.pop(oldest)
                self._remove_later(list(dropped.free))
            self._wake.notify_all()
        return entry

    def _image_changed(self, entry: _Set) -> bool:
        """Drain `entry` if its image tag names another image than its containers'."""
        try:
            image_id = self.client.images.get(entry.image).id
        except Exception:
            image_id = None
        with self._lock:
            if entry.image_id is None or entry.image_id == image_id:
                return False
            drained = list(entry.free)
            entry.free.clear()
            entry.image_id = image_id
            self._wake.notify_all()
        logger.info("container pool: image %s changed, %d warm container(s) drained",
                    entry.image, len(drained))
        self._remove_later(drained)
        return True

    def _failed(self, entry: _Set, dead: list[_Warm]) -> None:
        with self._lock:
            entry.failed()
        self._remove_later(dead)

    def _sweep(self, entries: list[_Set], everything: bool = False) -> None:
        """Forget ready containers that no longer run (an engine restart stops them all) and
        remove every container of this pool that is neither ready nor handed to a job (one
        whose removal failed while the engine was away); `everything`: the ready ones too."""
        try:
            mine = self.client.containers.list(
                all=True, filters={"label": f"{warm.LABEL_OWNER}={self.owner}"})
        except Exception:  # the engine is away: the next sweep, or claims, find out
            return
        running = {c.id for c in mine if c.status == "running"}
        ready: set[str] = set()
        for entry in entries:
            with self._lock:
                dead = [w for w in entry.free if everything or w.container.id not in running]
                for item in dead:
                    entry.free.remove(item)
                ready.update(w.container.id for w in entry.free)
            if dead and not everything:
                self._failed(entry, dead)
            elif dead:
                self._remove(dead)
        strays = [c for c in mine if c.id not in ready
                  and warm.run_of(c, LABEL_RUN) is None]  # a claimed one is its job's
        for container in strays:
            self._remove([_Warm(container, Path(container.labels.get(warm.LABEL_DIR, "")))])

    # -- keeping ------------------------------------------------------------------------------

    def _keep(self) -> None:
        """Refill every set to `size`, one container at a time; check images now and then."""
        checked = time.monotonic()
        while True:
            with self._lock:
                if self._stopped:
                    return
                due = next((e for e in self._sets.values() if e.due(self.size)), None)
                if due is None:
                    self._wake.wait(timeout=CHECK_SECONDS)
                sets = list(self._sets.values())
            if time.monotonic() - checked >= CHECK_SECONDS:
                checked = time.monotonic()
                self._sweep(sets)
                for entry in sets:
                    self._image_changed(entry)
            if due is not None:
                self._add(due)

    def _add(self, entry: _Set) -> None:
        made = self._create(entry)
        with self._lock:
            if made is not None and not self._stopped and self._sets.get(
                    warm.key_id(warm.pool_key(entry.options))) is entry:
                entry.free.append(made)
                return
        if made is None:
            with self._lock:
                entry.failed()
            time.sleep(min(5.0, 0.2 * 2 ** entry.failures))
        else:
            self._remove([made])

    def _create(self, entry: _Set) -> _Warm | None:
        """A started warm container of `entry`'s set, or None (logged)."""
        parent = Path(tempfile.mkdtemp(prefix="flowforge-warm-", dir=self.job_root))
        job_dir = parent / "job"
        container: Any = None
        try:
            job_dir.mkdir()
            job_dir.chmod(0o777)  # as a cold job's: the container's user writes its output
            os.mkfifo(job_dir / warm.START_FIFO, 0o644)
            image = self.client.images.get(entry.image)
            labels = {warm.LABEL_WARM: warm.key_id(warm.pool_key(entry.options)),
                      warm.LABEL_OWNER: self.owner, warm.LABEL_DIR: str(parent),
                      LABEL_PREFECT: prefect_api_url()}
            options = create_options(entry.options, {"HOME": "/tmp"}, labels, job_dir)
            container = self.client.containers.create(image.id, warm.waiter_argv(), **options)
            container.start()
        except Exception as exc:
            logger.warning("container pool: could not warm a container of %s: %s",
                           entry.image, exc)
            if container is not None:  # created, not started (the engine stopping, say)
                self._remove([_Warm(container, parent)])
            shutil.rmtree(parent, ignore_errors=True)
            return None
        with self._lock:
            if entry.image_id is None:
                entry.image_id = image.id
        return _Warm(container, parent)

    def _remove_later(self, dead: list[_Warm]) -> None:
        if dead:
            thread = threading.Thread(target=self._remove, args=(dead,), daemon=True,
                                      name="flowforge-pool-remove")
            thread.start()
            with self._lock:  # close() waits for them: a stopped worker leaves none
                self._removing = [t for t in self._removing if t.is_alive()] + [thread]

    @staticmethod
    def _remove(dead: list[_Warm]) -> None:
        for item in dead:
            remove(item.container)
            if item.parent.name.startswith("flowforge-warm-"):
                shutil.rmtree(item.parent, ignore_errors=True)


__all__ = ["MAX_KEYS", "ContainerPool"]
