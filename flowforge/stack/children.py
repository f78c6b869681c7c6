"""The supervisor's children: processes started in sessions of their own, stopped by PID.

Every child is started with `start_new_session=True` so its whole process group can be
signalled: `prefect server start` and the worker spawn processes of their own. Children are
only ever stopped by the PIDs this module started, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 40


class SupervisorError(Exception):
    """Start-up or run-time failure; the message is meant for the user."""


class StopRequested(Exception):
    """Raised inside waits once SIGINT/SIGTERM/SIGHUP arrived."""


@dataclass
class Child:
    """One child process: started in a new session, output appended to `log_path`."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path | None = None
    #: The child's umask: 077 for servers that keep databases, 022 for workers, whose jobs'
    #: files another user (a container's, the job user) must read.
    umask: int = 0o077
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError(f"{self.name} already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n===== {stamp} flowforge up: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, umask=self.umask,
            )

    def restart(self) -> None:
        """Start again after the process ended (the supervisor's keeper calls this)."""
        if self.running():
            raise RuntimeError(f"{self.name} is still running")
        self.process = None
        self.start()

    def poll(self) -> int | None:
        """The exit code, or None while running (or never started)."""
        return self.process.poll() if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _group_alive(self) -> bool:
        if self.process is None:
            return False
        try:
            os.killpg(self.process.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = STOP_TIMEOUT, force: Callable[[], bool] | None = None) -> int | None:
        """SIGTERM the process group, wait up to `timeout`, then SIGKILL what is left of it.

        `force()` returning True (a second Ctrl-C) cuts the wait short. Returns the exit code.
        """
        if self.process is None:
            return None
        if self._group_alive():
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            # Wait for the leader and for the rest of its group (e.g. uvicorn under prefect server).
            while time.monotonic() < deadline and not (force and force()):
                self.process.poll()
                if not self._group_alive():
                    break
                time.sleep(0.05)
            if self._group_alive():
                self._signal_group(signal.SIGKILL)
        try:
            return self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILLed processes do not linger
            return None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def exit_reason(self) -> str:
        code = self.poll()
        if code is not None and code < 0:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        return f"exited with code {code}"

    def describe_exit(self) -> str:
        return (f"{self.name} (pid {self.pid}) {self.exit_reason()}; last lines of "
                f"{self.log_path}:\n{self.log_tail()}")


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on host:port (a bind with SO_REUSEADDR fails)."""
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SupervisorError(f"invalid host {host!r}: {exc}") from exc
    family, socktype, proto, _, sockaddr = infos[0]
    with socket.socket(family, socktype, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError:
            return True
    return False


def check_port_free(host: str, port: int, what: str, option: str, env_var: str) -> None:
    if port_in_use(host, port):
        raise SupervisorError(
            f"Port {port} on {host} is already in use ({what}). "
            f"Choose another port with {option} or {env_var}, or stop whatever listens there."
        )


def wait_http_ok(url: str, timeout: float, *, interval: float = 0.25,
                 check: Callable[[], None] | None = None) -> float:
    """Poll GET `url` until it answers 200; return the seconds it took.

    `check()` runs between attempts and may raise (a child died, a stop was requested).
    Raises TimeoutError with the last answer or error after `timeout` seconds.
    """
    start = time.monotonic()
    deadline = start + timeout
    last = "no answer"
    local = httpx.URL(url).host in ("127.0.0.1", "localhost", "::1")
    with httpx.Client(timeout=5, trust_env=not local) as client:  # no proxy for local servers
        while True:
            if check is not None:
                check()
            try:
                response = client.get(url)
                if response.status_code == 200:
                    return time.monotonic() - start
                last = f"HTTP {response.status_code}: {response.text[:300]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s (last: {last})")
            time.sleep(interval)


def local_host(host: str) -> str:
    """Where to reach a server bound to `host` from this machine."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def run_markers(home: Path) -> Path:
    """Where the warm runner leaves a file per flow-run process it forked, named for its PID
    and holding its flow run id, for the supervisor to name the runs a dead worker left."""
    return home / "run" / "flow-runs"


def base_env() -> dict[str, str]:
    """What a child inherits: this process's environment (children add their own on top)."""
    return dict(os.environ)


class PidFile:
    """<home>/run/pids.json: the supervisor's PID, its children's PIDs (= process groups), state."""

    def __init__(self, home: Path) -> None:
        self.path = home / "run" / "pids.json"
        self.markers = run_markers(home)
        self.state = "starting"
        self.children: list[Child] = []
        self.exit_code: int | None = None
        #: Each child's keeper state (status, restarts, last exit), by name; see stack.keeper.
        self.states: Mapping[str, Any] = {}
        self.owned = False  # set by the first write(), after check_stale() passed

    def check_stale(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        pid = data.get("supervisor")
        if data.get("state") == "stopped" or not isinstance(pid, int) or pid == os.getpid():
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return  # not running: a stale file from a killed supervisor
        if b"flowforge" in cmdline:
            raise SupervisorError(
                f"another `flowforge up` (pid {pid}) is running with home {self.path.parent.parent}; "
                f"stop it first (or delete {self.path} if that is wrong)")

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "supervisor": os.getpid(),
            "state": self.state,
            "exit_code": self.exit_code,
            "children": {
                c.name: {"pid": c.pid, "pgid": c.pid, "log": str(c.log_path), "argv": c.argv,
                         **(self.states[c.name].as_json() if c.name in self.states else {})}
                for c in self.children if c.pid is not None
            },
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.path)
        self.owned = True


@dataclass
class Signals:
    count: int = 0
    name: str = ""

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.name = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return self.count > 0

    def forced(self) -> bool:
        return self.count > 1

    def check(self) -> None:
        if self.count:
            raise StopRequested(self.name)


@contextlib.contextmanager
def handle_signals(state: Signals) -> Iterator[None]:
    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, state.handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


__all__ = [
    "LOG_TAIL_LINES",
    "STOP_TIMEOUT",
    "Child",
    "PidFile",
    "Signals",
    "StopRequested",
    "SupervisorError",
    "base_env",
    "check_port_free",
    "handle_signals",
    "local_host",
    "port_in_use",
    "run_markers",
    "wait_http_ok",
]
