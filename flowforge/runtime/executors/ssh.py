"""The SSH executor: a script job on one or many servers at once, through asyncssh.

One `SshPool` serves a whole flow run: its own event loop in one thread, holding one connection
per server that every job of the run reuses. Job tasks are sync Prefect tasks on a thread pool;
each hands its coroutine to the pool's loop and waits, so all servers of a job run concurrently
(`asyncio.gather`) and the connections never cross event loops. What happens on each server is
`ssh_remote.RemoteJob`.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

import asyncssh

from flowforge.connectors.servers import PrefectDirectory, ServerDirectory, resolve
from flowforge.connectors.ssh import Breaker
from flowforge.core.errors import SshError
from flowforge.core.names import DEFAULT_NAMESPACE
from flowforge.core.servers import ServerRecord
from flowforge.core.targets import SshTarget, TargetBase
from flowforge.runtime.executors.base import Executor, LogFn, RunInfo, ScriptRequest, ScriptResult
from flowforge.runtime.executors.ssh_remote import Bundle, RemoteJob, ServerOutcome
from flowforge.runtime.settings import WorkerSettings

T = TypeVar("T")


class SshPool:
    """A flow run's SSH side: one event loop thread, one connection per server, live remote jobs."""

    def __init__(self, directory: ServerDirectory, settings: WorkerSettings | None = None,
                 on_secret: Callable[[Iterable[str]], None] | None = None,
                 namespace: str = DEFAULT_NAMESPACE) -> None:
        self.directory = directory
        self.namespace = namespace  # tags resolve among this namespace's servers
        self.settings = settings or WorkerSettings()
        self.on_secret = on_secret
        self.breaker = Breaker(directory, self.settings.ssh_breaker_failures,
                               self.settings.ssh_breaker_cooldown)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="flowforge-ssh",
                                        daemon=True)
        self._thread.start()
        # Touched only on the loop's thread.
        self._connections: dict[str, asyncio.Task[tuple[asyncssh.SSHClientConnection,
                                                        ServerRecord]]] = {}
        self._jobs: set[asyncio.Task[Any]] = set()
        self._closed = False
        atexit.register(self.close)

    # -- called from job threads ----------------------------------------------------------------

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the pool's loop and wait; a cancel there is raised here as CancelledError."""
        if self._closed:
            coro.close()
            raise concurrent.futures.CancelledError("the SSH pool is closed")
        future = asyncio.run_coroutine_threadsafe(self._tracked(coro), self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def close(self, timeout: float = 10.0) -> None:
        """Cancel running jobs (their remote groups are killed), then close every connection."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()
        atexit.unregister(self.close)

    # -- on the loop ------------------------------------------------------------------------------

    async def _tracked(self, coro: Coroutine[Any, Any, T]) -> T:
        task = asyncio.current_task()
        assert task is not None
        self._jobs.add(task)
        try:
            return await coro
        finally:
            self._jobs.discard(task)

    async def _shutdown(self) -> None:
        for task in list(self._jobs):
            task.cancel()
        if self._jobs:
            await asyncio.wait(list(self._jobs), timeout=self.settings.ssh_kill_grace + 5)
        for pending in self._connections.values():
            if pending.done() and not pending.cancelled() and pending.exception() is None:
                pending.result()[0].close()
            else:
                pending.cancel()
        self._connections.clear()

    async def connection(self, name: str) -> tuple[asyncssh.SSHClientConnection, ServerRecord]:
        """The run's connection to `name`, opened on first use; a dropped one is re-opened."""
        task = self._connections.get(name)
        if task is not None and task.done() and (
                task.cancelled() or task.exception() is not None
                or task.result()[0].is_closed()):
            task = None
        if task is None:
            task = asyncio.ensure_future(self._open(name))
            self._connections[name] = task
        # shield: one job being cancelled must not abort a connect other jobs are waiting on.
        return await asyncio.shield(task)

    async def _open(self, name: str) -> tuple[asyncssh.SSHClientConnection, ServerRecord]:
        record, credential = await self.directory.server(name)
        if self.on_secret is not None:
            self.on_secret(credential.values())
        connected = await self.breaker.connect(record, credential,
                                               timeout=self.settings.ssh_connect_timeout)
        return connected.connection, record

    async def run_job(self, target: SshTarget, job: ScriptRequest, log: LogFn) -> dict[str, ServerOutcome]:
        bundle = Bundle.of(job)  # once per job: every server gets the same files
        names = await resolve(self.directory, target.servers, target.tags, self.namespace)
        outcomes = await asyncio.gather(*(self._run_on(name, job, bundle, log) for name in names))
        return dict(zip(names, outcomes, strict=True))

    async def _run_on(self, name: str, job: ScriptRequest, bundle: Bundle,
                      log: LogFn) -> ServerOutcome:
        try:
            connection, _ = await self.connection(name)
        except SshError as exc:
            log("stderr", f"[{name}] {exc.message}")
            return ServerOutcome(error=exc.message)
        try:
            return await RemoteJob(connection, name, job, bundle, log, self.settings).run()
        except SshError as exc:
            return ServerOutcome(error=exc.message)
        except (asyncssh.Error, OSError) as exc:
            reason = exc.reason if isinstance(exc, asyncssh.Error) else str(exc)
            if (isinstance(exc, asyncssh.SFTPError) and not connection.is_closed()
                    and not isinstance(exc, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection)):
                # the box refused a file operation (full disk, no /tmp): it is still there
                return ServerOutcome(error=f"server '{name}': file transfer failed: {reason}")
            return ServerOutcome(error=f"server '{name}': connection lost: {reason}")


class SshExecutor(Executor):
    """Runs script jobs on every server of their ssh target, on one pool per run."""

    kind = "ssh"

    def __init__(self, pool_factory: Callable[[], SshPool]) -> None:
        self._factory = pool_factory
        self._pool: SshPool | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_run(cls, run: RunInfo) -> SshExecutor:
        return cls(lambda: SshPool(PrefectDirectory(), run.settings, on_secret=run.on_secret,
                                   namespace=run.namespace))

    @property
    def pool(self) -> SshPool:
        """The run's pool, opened by its first ssh job (one connection per server)."""
        with self._lock:
            if self._pool is None:
                self._pool = self._factory()
            return self._pool

    def kill_all(self, grace: float = 2.0) -> None:
        self.close()  # cancels the running jobs: their remote groups are killed

    def close(self) -> None:
        with self._lock:
            pool = self._pool
        if pool is not None:
            pool.close()

    def run(self, job: ScriptRequest, log: LogFn, target: TargetBase | None = None) -> ScriptResult:
        if not isinstance(target, SshTarget):
            return ScriptResult(exit_code=None, error="an ssh job needs an ssh target")
        try:
            outcomes = self.pool.call(self.pool.run_job(target, job, log))
        except SshError as exc:
            return ScriptResult(exit_code=None, error=exc.message)
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            return ScriptResult(exit_code=None, error="cancelled: the run was stopped")
        except ValueError as exc:  # a job value that is not JSON, before anything ran
            return ScriptResult(exit_code=None, error=str(exc))
        return combine(outcomes, target.allow_partial)


def combine(outcomes: dict[str, ServerOutcome], allow_partial: bool) -> ScriptResult:
    """One job result from every server's: output per server; conditions OR-ed (a script sets
    true to say "this server needs attention"); variable writes applied in server order."""
    failed = {name: o for name, o in outcomes.items() if o.error is not None}
    conditions = [o.condition for o in outcomes.values() if o.condition is not None]
    variables: dict[str, Any] = {}
    for outcome in outcomes.values():
        variables.update(outcome.variables_set)
    error = None
    if failed and (not allow_partial or len(failed) == len(outcomes)):
        error = (f"failed on {len(failed)} of {len(outcomes)} servers: "
                 + "; ".join(f"{name}: {o.error}" for name, o in failed.items()))
    return ScriptResult(
        exit_code=max((o.exit_code or 0 for o in outcomes.values()), default=0),
        output={"servers": {name: o.public() for name, o in outcomes.items()}},
        condition=any(conditions) if conditions else None,
        variables_set=variables, error=error, output_on_error=True)


__all__ = ["ServerOutcome", "SshExecutor", "SshPool", "combine"]
