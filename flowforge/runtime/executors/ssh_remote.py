"""One job on one SSH server: its files up over SFTP, its process, its results back.

Per server the job directory is prepared locally with the same `workdir` protocol as a local
job, uploaded into a private directory (random name, mode 0700, as `mktemp -d` makes), run,
the result files read back and the directory removed. Job values reach the script only as
files: the environment travels as a NUL-separated file that the bash launcher below exports,
so no value is ever shell text. The launcher records its PID, which is also its process group
(sshd starts each session in its own session), so a timeout or a cancel kills the remote job
with everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shlex
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import asyncssh

from flowforge.core.errors import SshError
from flowforge.runtime.executors import workdir
from flowforge.runtime.executors.base import LogFn, ScriptRequest
from flowforge.runtime.executors.streams import STDERR_TAIL_LINES
from flowforge.runtime.settings import WorkerSettings

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


@dataclass(frozen=True)
class Bundle:
    """A job's directory as it goes to every server: relative path -> content, and the argv."""

    files: dict[str, bytes]
    argv: list[str]

    @classmethod
    def of(cls, job: ScriptRequest) -> Bundle:
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


class RemoteJob:
    """One job on one server, from the private directory's creation to its removal."""

    def __init__(self, connection: asyncssh.SSHClientConnection, server: str, job: ScriptRequest,
                 bundle: Bundle, log: LogFn, settings: WorkerSettings) -> None:
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
        async with await self._sftp() as sftp:
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

    async def _sftp(self) -> asyncssh.SFTPClient:
        try:
            return await self.conn.start_sftp_client()
        except asyncssh.ChannelOpenError as exc:
            # What asyncssh says when sshd has no sftp subsystem is "Session request failed",
            # which reads as a dropped connection; the connection is fine.
            if exc.code != asyncssh.OPEN_REQUEST_SESSION_FAILED:
                raise
            raise SshError("no_sftp", f"server '{self.server}': SFTP is unavailable on this "
                           "server (its sshd has no sftp subsystem), and FlowForge moves a "
                           "job's files over SFTP") from exc

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


__all__ = ["Bundle", "RemoteJob", "ServerOutcome", "asyncssh_signal"]
