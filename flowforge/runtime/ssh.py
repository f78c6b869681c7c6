"""The SSH executor: a script job on one or many servers at once, through asyncssh.

Per server: the job directory is prepared locally with the same `workdir` protocol as a local
job, uploaded over SFTP into a private directory (random name, mode 0700, as `mktemp -d`
makes), run, the result files read back over SFTP, and the directory removed. Job values
reach the script only as files: the environment travels as a NUL-separated file that the
bash launcher below exports, so no value is ever shell text.

One `SshPool` serves a whole flow run: its own event loop in one thread, holding one connection
per server that every job of the run reuses. Job tasks are sync Prefect tasks on a thread pool;
each hands its coroutine to the pool's loop and waits, so all servers of a job run concurrently
(`asyncio.gather`) and the connections never cross event loops.

The launcher records its PID, which is also its process group (sshd starts each session in its
own session), so a timeout or a cancel kills the remote job with everything it started, and a
job's leftover background processes are ended when it finishes, as the local executor does.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import secrets
import shlex
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import asyncssh

from flowforge.errors import SshError
from flowforge.runtime import workdir
from flowforge.runtime.local import LogFn, ScriptJob, ScriptResult
from flowforge.runtime.ssh_connect import Breaker
from flowforge.runtime.ssh_servers import ServerDirectory, ServerRecord, resolve
from flowforge.settings import Settings
from flowforge.spec import SshTarget

T = TypeVar("T")
STDERR_TAIL_LINES: Final = 20
ENV_FILE: Final = ".env0"
PID_FILE: Final = ".pid"
#: Where job directories go on the box; a fixed path, because finding the remote $TMPDIR would
#: cost one more process per job.
REMOTE_TMP: Final = "/tmp"
LAUNCHER: Final = "_launch.sh"
#: Stands for the job directory in the helper variables; the launcher puts "$PWD" there.
_JOB_DIR_MARK: Final = "/@FLOWFORGE_JOB_DIR@"
#: Records its PID (its process group, for kills), exports the job's environment from the
#: NUL-separated file (values never pass through the shell's parser) and the helper variables,
#: runs the job, then ends whatever the job left running in its group.
_LAUNCHER_SOURCE: Final = """\
echo $$ > .pid
while IFS= read -r -d '' kv; do export "$kv"; done < .env0
{helper_exports}
"$@" </dev/null
code=$?
trap '' TERM
kill -TERM 0 2>/dev/null
exit $code
"""
_RESULT_FILES: Final = (workdir.JobFiles.OUTPUT, workdir.JobFiles.CONDITION,
                        workdir.JobFiles.VARIABLES_SET, workdir.JobFiles.PROGRESS)


@dataclass
class ServerOutcome:
    """How the job ended on one server."""

    exit_code: int | None = None
    output: Any = None
    error: str | None = None
    condition: bool | None = None
    variables_set: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "output": self.output, "error": self.error}


class SshPool:
    """A flow run's SSH side: one event loop thread, one connection per server, live remote jobs."""

    def __init__(self, directory: ServerDirectory, settings: Settings | None = None,
                 on_secret: Callable[[Iterable[str]], None] | None = None) -> None:
        self.directory = directory
        self.settings = settings or Settings()
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

    async def run_job(self, target: SshTarget, job: ScriptJob, log: LogFn) -> dict[str, ServerOutcome]:
        bundle = _Bundle.of(job)  # once per job: every server gets the same files
        names = await resolve(self.directory, target.servers, target.tags)
        outcomes = await asyncio.gather(*(self._run_on(name, job, bundle, log) for name in names))
        return dict(zip(names, outcomes, strict=True))

    async def _run_on(self, name: str, job: ScriptJob, bundle: _Bundle,
                      log: LogFn) -> ServerOutcome:
        try:
            connection, _ = await self.connection(name)
        except SshError as exc:
            log("stderr", f"[{name}] {exc.message}")
            return ServerOutcome(error=exc.message)
        try:
            return await _RemoteJob(connection, name, job, bundle, log, self.settings).run()
        except SshError as exc:
            return ServerOutcome(error=exc.message)
        except (asyncssh.Error, OSError) as exc:
            reason = exc.reason if isinstance(exc, asyncssh.Error) else str(exc)
            if (isinstance(exc, asyncssh.SFTPError) and not connection.is_closed()
                    and not isinstance(exc, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection)):
                # the box refused a file operation (full disk, no /tmp): it is still there
                return ServerOutcome(error=f"server '{name}': file transfer failed: {reason}")
            return ServerOutcome(error=f"server '{name}': connection lost: {reason}")


@dataclass(frozen=True)
class _Bundle:
    """A job's directory as it goes to every server: relative path -> content, and the argv."""

    files: dict[str, bytes]
    argv: list[str]

    @classmethod
    def of(cls, job: ScriptJob) -> _Bundle:
        """Prepared with the local `workdir` protocol, then held in memory; ValueError for a
        job value that is not JSON or an invalid env name, before any server is touched."""
        for key, value in job.env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise ValueError(f"job env: invalid variable {key!r}")
        with tempfile.TemporaryDirectory(prefix="flowforge-ssh-") as tmp:
            local = Path(tmp)
            script = workdir.prepare(local, input=job.input, variables=job.variables,
                                     event=job.event, script=job.script, runtime=job.runtime)
            files = {p.relative_to(local).as_posix(): p.read_bytes()
                     for p in sorted(local.rglob("*")) if p.is_file()}
        files[ENV_FILE] = b"".join(f"{k}={v}".encode() + b"\0" for k, v in job.env.items())
        files[LAUNCHER] = _launcher().encode()
        argv = ["bash", LAUNCHER, *workdir.command_for(job.runtime, script.name, python="python3")]
        return cls(files, argv)


def _launcher() -> str:
    """The launcher, exporting the helper variables for wherever the directory landed: they go
    after the job's own env, so a job cannot point the helpers elsewhere."""
    exports = []
    for key, value in workdir.helper_env(_JOB_DIR_MARK).items():
        head, mark, tail = value.partition(_JOB_DIR_MARK)
        exports.append(f'export {key}="$PWD"{shlex.quote(tail)}' if mark
                       else f"export {key}={shlex.quote(head)}")
    return _LAUNCHER_SOURCE.replace("{helper_exports}", "\n".join(exports))


class _RemoteJob:
    """One job on one server, from the private directory's creation to its removal."""

    def __init__(self, connection: asyncssh.SSHClientConnection, server: str, job: ScriptJob,
                 bundle: _Bundle, log: LogFn, settings: Settings) -> None:
        self.conn = connection
        self.server = server
        self.job = job
        self.bundle = bundle
        self.log = log
        self.settings = settings
        self.tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    async def _run(self, command: str) -> str:
        """A short housekeeping command; its own time bound, so a hung box cannot hang the job."""
        result = await self.conn.run(command, check=False, timeout=self.settings.ssh_connect_timeout)
        if result.exit_status != 0:
            raise SshError("unreachable", f"server '{self.server}': `{command.split()[0]}` "
                           f"failed: {str(result.stderr or '').strip()[:300]}")
        return str(result.stdout or "").strip()

    async def run(self) -> ServerOutcome:
        # One SFTP session does all the file work: creating the private directory (a random
        # name made with mode 0700 and refused if it exists, which is what `mktemp -d` does),
        # writing the files and reading the results (each transfer in flight at once, straight
        # from and to memory) and removing the tree. Only the job itself costs a process on
        # the box: round trips and processes are what a fan-out to many servers pays for.
        bound = self.settings.ssh_connect_timeout
        async with self.conn.start_sftp_client() as sftp:
            remote = f"{REMOTE_TMP}/flowforge-{secrets.token_hex(8)}"
            await asyncio.wait_for(sftp.mkdir(remote, asyncssh.SFTPAttrs(permissions=0o700)),
                                   bound)
            try:
                await asyncio.wait_for(_upload(sftp, self.bundle.files, remote), bound)
                exit_code, timed_out = await self._execute(remote, self.bundle.argv)
                results = await asyncio.wait_for(asyncio.gather(*(
                    _read(sftp, f"{remote}/{name}") for name in _RESULT_FILES)), bound)
            finally:
                with contextlib.suppress(Exception):  # the box may be gone; nothing to do then
                    await asyncio.shield(asyncio.wait_for(sftp.rmtree(remote), bound))
        with tempfile.TemporaryDirectory(prefix="flowforge-ssh-") as tmp:
            for name, data in zip(_RESULT_FILES, results, strict=True):
                if data is not None:
                    (Path(tmp) / name).write_bytes(data)
            artifacts = workdir.collect(Path(tmp))
        return ServerOutcome(
            exit_code=exit_code, output=artifacts.output, condition=artifacts.condition,
            variables_set=artifacts.variables_set,
            error=self._error(exit_code, timed_out, artifacts.error))

    async def _execute(self, remote: str, argv: list[str]) -> tuple[int | None, bool]:
        command = f"cd -- {shlex.quote(remote)} && exec {shlex.join(argv)}"
        process = await self.conn.create_process(command, encoding=None)
        process.stdin.write_eof()
        pumps = asyncio.gather(self._pump(process.stdout, "stdout"),
                               self._pump(process.stderr, "stderr"))
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), self.job.timeout)
        except TimeoutError:
            timed_out = True
            await self._kill(remote, process)
        except asyncio.CancelledError:
            pumps.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncssh.Error):
                await pumps
            await self._kill(remote, process)
            raise
        # The channel is closed: what is left is already buffered, so this ends at once unless
        # the server went away mid-line.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pumps, 2.0)
        return process.returncode, timed_out

    async def _pump(self, stream: asyncssh.SSHReader[bytes], name: str) -> None:
        async for line in stream:
            if not line:  # the reader's end-of-stream marker, not an empty line ("\n")
                continue
            text = line.decode("utf-8", errors="replace").rstrip("\r\n")
            if name == "stderr" and not text.startswith("[progress "):
                self.tail.append(text)
            self.log(name, f"[{self.server}] {text}")

    async def _kill(self, remote: str, process: asyncssh.SSHClientProcess[bytes]) -> None:
        """SIGTERM the remote group, SIGKILL it after the grace, then drop the channel."""
        pid_file = shlex.quote(f"{remote}/{PID_FILE}")
        for signal, wait in (("TERM", self.settings.ssh_kill_grace), ("KILL", 1.0)):
            with contextlib.suppress(Exception):
                await self._run(f'kill -{signal} -- -"$(cat {pid_file})" 2>/dev/null; true')
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), wait)
                break
        process.close()

    def _error(self, code: int | None, timed_out: bool, artifacts_error: str | None) -> str | None:
        tail = "\n".join(self.tail)
        if timed_out:
            return f"timed out after {self.job.timeout:g}s"
        if code is None:
            return f"server '{self.server}': connection lost before the job reported its exit"
        if code < 0:
            return f"killed by SIG{asyncssh_signal(-code)}" + (f": {tail}" if tail else "")
        if code:
            return f"exit code {code}" + (f": {tail}" if tail else "")
        return artifacts_error


async def _upload(sftp: asyncssh.SFTPClient, files: dict[str, bytes], remote: str) -> None:
    folders = sorted({path.rsplit("/", 1)[0] for path in files if "/" in path})
    for folder in folders:
        await sftp.mkdir(f"{remote}/{folder}")

    async def write(path: str, data: bytes) -> None:
        async with sftp.open(f"{remote}/{path}", "wb") as remote_file:
            await remote_file.write(data)

    await asyncio.gather(*(write(path, data) for path, data in files.items()))


async def _read(sftp: asyncssh.SFTPClient, path: str) -> bytes | None:
    """A result file the script may or may not have written."""
    try:
        async with sftp.open(path, "rb") as remote_file:
            data: bytes = await remote_file.read()
            return data
    except asyncssh.SFTPNoSuchFile:
        return None


def asyncssh_signal(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name.removeprefix("SIG")
    except ValueError:
        return str(number)


class SshExecutor:
    """Runs one script job on every server of an ssh target; the `LocalExecutor.run` shape."""

    def __init__(self, pool: SshPool, target: SshTarget) -> None:
        self.pool = pool
        self.target = target

    def run(self, job: ScriptJob, log: LogFn) -> ScriptResult:
        try:
            outcomes = self.pool.call(self.pool.run_job(self.target, job, log))
        except SshError as exc:
            return ScriptResult(exit_code=None, error=exc.message)
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            return ScriptResult(exit_code=None, error="cancelled: the run was stopped")
        except ValueError as exc:  # a job value that is not JSON, before anything ran
            return ScriptResult(exit_code=None, error=str(exc))
        return combine(outcomes, self.target.allow_partial)


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
        variables_set=variables, error=error)


__all__ = ["ServerOutcome", "SshExecutor", "SshPool", "combine"]
