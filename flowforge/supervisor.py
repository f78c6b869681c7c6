"""`flowforge up`: start the Prefect server, a process worker and the API as children; stop them all.

Plain, blocking functions (this runs in the CLI process). Every child is started in its own
session (`start_new_session=True`) so the whole process group can be signalled: `prefect server
start` and the worker spawn processes of their own. Children are only ever stopped by the PIDs
this module started, never by name.

Layout under `home`:
    logs/prefect-server.log, logs/worker.log, logs/api.log   child output (appended)
    run/pids.json                                            supervisor and child PIDs + state
    prefect/                                                 PREFECT_HOME, prefect.db
    project/                                                 the worker's cwd (settings.project)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape

from flowforge.settings import Settings

DEFAULT_API_APP = "api.main:app"
PREFECT_HEALTH_TIMEOUT = 60.0
API_HEALTH_TIMEOUT = 90.0
WORKER_ONLINE_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 40

# Server-side tuning, see /work/shared/PREFECT-NOTES.md gotcha 2 (names checked in prefect 3.8.8
# prefect/settings/models/server/services.py).
RECORDER_TUNING = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1",
}


# Both servers keep SQLite connections on aiosqlite threads: their cyclic garbage collection runs
# off the event loop, or one "database is locked" can freeze the loop for the busy timeout
# (flowforge/offloop_gc.py, docs/architecture.md).
SERVE_OFF_LOOP_GC = [sys.executable, "-m", "flowforge.offloop_gc"]


class SupervisorError(Exception):
    """Start-up or run-time failure; the message is meant for the user."""


class StopRequested(Exception):
    """Raised inside waits once SIGINT/SIGTERM/SIGHUP arrived."""


# --------------------------------------------------------------------------- children


@dataclass
class Child:
    """One child process: started in a new session, output appended to `log_path`."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path | None = None
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
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

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

    def describe_exit(self) -> str:
        code = self.poll()
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        return f"{self.name} (pid {self.pid}) {how}; last lines of {self.log_path}:\n{self.log_tail()}"


# --------------------------------------------------------------------------- small helpers


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


def _local_host(host: str) -> str:
    """Where to reach a server bound to `host` from this machine."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def external_prefect_url(settings: Settings) -> str | None:
    """The Prefect API to use instead of starting one: FLOWFORGE_PREFECT_API_URL or PREFECT_API_URL."""
    return settings.prefect_api_url or os.environ.get("PREFECT_API_URL") or None


def _e(value: object) -> str:
    """Escape text for rich markup (paths and log tails may contain brackets)."""
    return escape(str(value))


def _base_env() -> dict[str, str]:
    return dict(os.environ)


def _run_async(coro: Any) -> Any:
    return asyncio.run(coro)


# --------------------------------------------------------------------------- Prefect server


def prefect_database_url(settings: Settings) -> str:
    """Prefect's server speaks asyncpg / aiosqlite; accept plain URLs and name the driver."""
    url = settings.prefect_database_url
    if not url:
        return f"sqlite+aiosqlite:///{settings.prefect_home / 'prefect.db'}"
    scheme, sep, rest = url.partition("://")
    base = scheme.split("+", 1)[0]
    if base in ("postgresql", "postgres"):
        return f"postgresql+asyncpg{sep}{rest}"
    if base == "sqlite":
        return f"sqlite+aiosqlite{sep}{rest}"
    return url


def prefect_server_env(settings: Settings) -> dict[str, str]:
    port = settings.prefect_port
    home = settings.prefect_home
    env = _base_env()
    env.pop("PREFECT_API_URL", None)  # the server must not think it is a client of another one
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": prefect_database_url(settings),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_UI_URL": f"http://127.0.0.1:{port}",
        **RECORDER_TUNING,
    })
    return env


def start_prefect_server(settings: Settings, *, timeout: float = PREFECT_HEALTH_TIMEOUT,
                         check: Callable[[], None] | None = None,
                         on_started: Callable[[Child], None] | None = None) -> Child:
    """Start `prefect server start` on 127.0.0.1:<prefect_port> and wait for /api/health.

    `on_started(child)` runs right after the process exists (before the wait). On any failure
    (child died, timeout, stop requested) the child is stopped before raising.
    """
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    child = Child(
        name="prefect-server",
        argv=[*SERVE_OFF_LOOP_GC, "prefect", "server", "start",
              "--host", "127.0.0.1", "--port", str(settings.prefect_port)],
        env=prefect_server_env(settings),
        log_path=settings.home / "logs" / "prefect-server.log",
    )
    child.start()
    if on_started is not None:
        on_started(child)
    _wait_child_http(child, f"http://127.0.0.1:{settings.prefect_port}/api/health", timeout, check)
    return child


def _wait_child_http(child: Child, url: str, timeout: float, check: Callable[[], None] | None) -> float:
    def guard() -> None:
        if check is not None:
            check()
        if not child.running():
            raise SupervisorError(child.describe_exit())

    try:
        return wait_http_ok(url, timeout, check=guard)
    except TimeoutError as exc:
        child.stop()
        raise SupervisorError(f"{child.name} not healthy: {exc}\nlast lines of {child.log_path}:\n"
                              f"{child.log_tail()}") from exc
    except BaseException:
        child.stop()
        raise


# --------------------------------------------------------------------------- work pool, worker

#: Limits of a docker-pool flow-run container (the whole run: Prefect, the launcher, every
#: local job) and its /tmp, where the jobs' directories live (counted in the memory).
DOCKER_POOL_MEMORY = "4g"
DOCKER_POOL_PIDS = 4096
DOCKER_POOL_TMPFS = "rw,nosuid,nodev,exec,size=1g"


def ensure_work_pool(api_url: str, name: str, pool_type: str = "process",
                     defaults: dict[str, Any] | None = None) -> bool:
    """Create work pool `name` unless it exists (see `prefect_sync.ensure_work_pool`)."""
    from flowforge.prefect_sync import ensure_work_pool as _ensure

    created: bool = _with_prefect(api_url, name, lambda client: _ensure(
        client, name, pool_type, defaults))
    return created


def _with_prefect(api_url: str, pool: str, call: Callable[[Any], Any]) -> Any:
    """`await call(client)` with a Prefect client of the server at `api_url`, from sync code."""
    from flowforge.prefect_sync import DeployTarget, prefect_client

    async def go() -> Any:
        target = DeployTarget(api_url=api_url, project_dir=Path("."), work_pool=pool)
        async with prefect_client(target) as client:
            return await call(client)

    return _run_async(go())


def worker_env(settings: Settings, api_url: str, prefect_home: Path | None) -> dict[str, str]:
    env = _base_env()
    env["PREFECT_API_URL"] = api_url
    env["PREFECT_WORKER_QUERY_SECONDS"] = str(settings.worker_query_seconds)
    if prefect_home is not None:
        env["PREFECT_HOME"] = str(prefect_home)
    return env


def start_worker(settings: Settings, api_url: str, prefect_home: Path | None = None,
                 pool_type: str = "process") -> Child:
    """Start `prefect worker start --pool <pool> --type <pool_type>` in settings.project.

    The pool is `work_pool` for process workers, `docker_work_pool` for the docker worker.
    `prefect_home` is None when using an external Prefect server (keep the user's profile).
    """
    settings.project.mkdir(parents=True, exist_ok=True)
    pool, name = ((settings.work_pool, "worker") if pool_type == "process"
                  else (settings.docker_work_pool, f"{pool_type}-worker"))
    child = Child(
        name=name,
        argv=[sys.executable, "-m", "prefect", "worker", "start",
              "--pool", pool, "--type", pool_type],
        env=worker_env(settings, api_url, prefect_home),
        log_path=settings.home / "logs" / f"{name}.log",
        cwd=settings.project,
    )
    child.start()
    return child


def wait_worker_online(api_url: str, pool: str, timeout: float = WORKER_ONLINE_TIMEOUT,
                       check: Callable[[], None] | None = None) -> float:
    """Wait until the pool has an ONLINE worker; return the seconds it took."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import WorkerStatus
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def online() -> bool:
        async with get_client() as client:
            workers = await client.read_workers_for_work_pool(pool)
            return any(w.status == WorkerStatus.ONLINE for w in workers)

    start = time.monotonic()
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        while True:
            if check is not None:
                check()
            with contextlib.suppress(Exception):
                if _run_async(online()):
                    return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise SupervisorError(f"no worker came online in pool {pool!r} within {timeout:.0f}s")
            time.sleep(0.25)


def docker_pool_defaults(settings: Settings) -> dict[str, Any]:
    """Job-variable defaults of the docker pool: the runner image, which has FlowForge and
    Prefect, with the project directory (generated flows) mounted read-only at its own path,
    so the deployments' pull step finds it; host networking, the only way here to reach a
    Prefect API on 127.0.0.1 (PREFECT-NOTES 9); never pull (no registry); a writable
    PREFECT_HOME instead of the worker's own (PREFECT-NOTES 10).

    The flow-run container is hardened as a container job is, bar the network: not root (the
    project's owner, or nobody for a root-owned project, which FlowForge writes readable to
    all), read-only root with a tmpfs /tmp for the jobs' directories, every capability
    dropped, no-new-privileges, memory and pids limits, and tini as PID 1 so a cancellation's
    SIGTERM reaches the flow run and the jobs' orphans are reaped. Prefect's docker worker
    would run the image's user (root) with every default capability.
    """
    from flowforge.image import runner_image_name
    from flowforge.runtime.container import ISOLATION

    project = str(settings.project)
    return {
        "image": settings.runner_image or runner_image_name(),
        "image_pull_policy": "Never",
        "network_mode": "host",
        "volumes": [f"{project}:{project}:ro"],
        "env": {"PREFECT_HOME": "/tmp/prefect", "HOME": "/tmp"},
        "auto_remove": True,
        "mem_limit": DOCKER_POOL_MEMORY,
        "memswap_limit": DOCKER_POOL_MEMORY,  # no swap: the limit is the limit
        "container_create_kwargs": {
            **ISOLATION,
            "user": pool_user(settings.project),
            "tmpfs": {"/tmp": DOCKER_POOL_TMPFS},
            "pids_limit": DOCKER_POOL_PIDS,
        },
    }


def pool_user(project: Path) -> str:
    """The docker pool's `uid:gid`: the project directory's owner, so the flow run can read
    the generated flows even in a private directory; nobody when that owner is root (or the
    directory is not there yet and this process is root)."""
    try:
        info = project.stat()
        uid, gid = info.st_uid, info.st_gid
    except OSError:
        uid, gid = os.getuid(), os.getgid()
    return "65534:65534" if uid == 0 else f"{uid}:{gid}"


#: The docker pool's job variables that isolate its flow-run containers.
HARDENING_KEYS = ("container_create_kwargs", "mem_limit", "memswap_limit")


def warn_unhardened_pool(api_url: str, pool: str, defaults: dict[str, Any],
                         console: Console) -> list[str]:
    """Say so when an existing docker pool lacks FlowForge's container hardening (made by an
    older FlowForge, or edited); it is left as it is. Returns the job variables that differ."""
    from flowforge.prefect_sync import pool_drift

    try:
        drift: list[str] = _with_prefect(api_url, pool, lambda client: pool_drift(
            client, pool, defaults, HARDENING_KEYS))
    except Exception as exc:  # a warning only: never stops `up`
        console.print(f"[yellow]Warning:[/] could not read work pool {_e(repr(pool))}: {_e(str(exc))}")
        return []
    if drift:
        console.print(
            f"[yellow]Warning:[/] work pool {_e(repr(pool))} does not have FlowForge's container "
            f"hardening ({_e(', '.join(drift))} differ from its defaults): its flow runs may run "
            f"as root with default capabilities. It was made by an older FlowForge or edited; "
            f"`prefect work-pool delete {_e(pool)}` and `flowforge up --docker` re-create it.")
    return drift


def check_runner_image(image: str, console: Console) -> None:
    """Warn now, not at the first docker-pool run, when the pool's image is missing (it is
    never pulled)."""
    from flowforge.runtime.container import docker_client

    try:
        docker_client().images.get(image)
    except Exception as exc:
        console.print(f"[yellow]Warning:[/] image {_e(image)} is not available ({_e(str(exc))}); "
                      "build it with `flowforge image build` before running on the docker pool")


def reap_containers(api_url: str, console: Console, quiet: bool = False) -> None:
    """Remove job containers left by runs that are over (a worker killed mid-job).

    `quiet`: say nothing when there is no Docker engine (a process-only set-up needs none).
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flowforge.runtime.container import prefect_run_finished, reap

    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            removed = reap(prefect_run_finished, scope=api_url)
    except Exception as exc:  # no engine here is not an error for `up`
        if not quiet:
            console.print(f"Container reaper skipped: {_e(str(exc))}")
        return
    if removed:
        console.print(f"Removed {len(removed)} leftover job container(s): {_e(', '.join(removed))}")


# --------------------------------------------------------------------------- API


def api_env(settings: Settings, prefect_api_url: str, prefect_home: Path | None) -> dict[str, str]:
    """The API child's env: every effective setting as FLOWFORGE_*, so it sees what `up` sees."""
    env = _base_env()
    effective = settings.model_copy(update={"prefect_api_url": prefect_api_url})
    for name, value in effective.model_dump().items():
        key = f"FLOWFORGE_{name.upper()}"
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    env["FLOWFORGE_PREFECT_UI_URL"] = effective.ui_url()
    env["PREFECT_API_URL"] = prefect_api_url
    if prefect_home is not None:
        env["PREFECT_HOME"] = str(prefect_home)
    return env


def start_api(settings: Settings, prefect_api_url: str, prefect_home: Path | None = None,
              app: str = DEFAULT_API_APP) -> Child:
    """Start uvicorn on <api_host>:<api_port> serving `app` (module:attribute)."""
    child = Child(
        name="api",
        argv=[*SERVE_OFF_LOOP_GC, "uvicorn", app,
              "--host", settings.api_host, "--port", str(settings.api_port)],
        env=api_env(settings, prefect_api_url, prefect_home),
        log_path=settings.home / "logs" / "api.log",
    )
    child.start()
    return child


# --------------------------------------------------------------------------- run_up


class PidFile:
    """<home>/run/pids.json: the supervisor's PID, its children's PIDs (= process groups), state."""

    def __init__(self, home: Path) -> None:
        self.path = home / "run" / "pids.json"
        self.state = "starting"
        self.children: list[Child] = []
        self.exit_code: int | None = None
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
                c.name: {"pid": c.pid, "pgid": c.pid, "log": str(c.log_path), "argv": c.argv}
                for c in self.children if c.pid is not None
            },
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.path)
        self.owned = True


@dataclass
class _Signals:
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
def _handle_signals(state: _Signals) -> Iterator[None]:
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


def run_up(settings: Settings, *, api_app: str = DEFAULT_API_APP, console: Console | None = None,
           err_console: Console | None = None, docker: bool = False) -> int:
    """Start everything, block until SIGINT/SIGTERM/SIGHUP or a child dies, stop all children.

    Returns the exit code: 0 after a requested stop, 1 when start-up failed or a child died.
    Progress and URLs go to `console` (stdout), failures to `err_console` (stderr).
    """
    console = console or Console(soft_wrap=True, highlight=False)
    err_console = err_console or Console(stderr=True, soft_wrap=True, highlight=False)
    signals = _Signals()
    pids = PidFile(settings.home)
    children: list[Child] = []
    code = 1
    with _handle_signals(signals):
        try:
            code = _start_and_block(settings, api_app, console, signals, pids, children, docker)
        except StopRequested:
            console.print(f"[yellow]{signals.name} received during start-up; stopping.[/]")
            code = 0
        except SupervisorError as exc:
            err_console.print(f"[red bold]flowforge up failed:[/] {escape(str(exc))}")
            code = 1
        finally:
            if children:
                pids.state = "stopping"
                pids.write()
                console.print("Stopping " + ", ".join(c.name for c in reversed(children)) + " ...")
            for child in reversed(children):
                child.stop(STOP_TIMEOUT, force=signals.forced)
            if pids.owned:  # never touch the file of another running supervisor
                pids.state, pids.exit_code = "stopped", code
                with contextlib.suppress(OSError):
                    pids.write()
    return code


def _start_and_block(settings: Settings, api_app: str, console: Console, signals: _Signals,
                     pids: PidFile, children: list[Child], docker: bool = False) -> int:
    t0 = time.monotonic()
    external = external_prefect_url(settings)
    api_local = f"http://{_local_host(settings.api_host)}:{settings.api_port}"

    # Fail fast before starting anything.
    check_port_free(settings.api_host, settings.api_port, "FlowForge API", "--api-port",
                    "FLOWFORGE_API_PORT")
    if external is None:
        if settings.prefect_port == settings.api_port:
            raise SupervisorError(f"--api-port and --prefect-port are both {settings.api_port}")
        check_port_free("127.0.0.1", settings.prefect_port, "Prefect server", "--prefect-port",
                        "FLOWFORGE_PREFECT_PORT")
    pids.check_stale()
    for d in (settings.home, settings.home / "logs"):
        d.mkdir(parents=True, exist_ok=True)
    pids.children = children
    pids.write()

    def started(child: Child) -> None:
        children.append(child)
        pids.write()

    def guard() -> None:
        signals.check()
        for c in children:
            if not c.running():
                raise SupervisorError(c.describe_exit())

    # 1. Prefect server
    prefect_home: Path | None
    if external is None:
        prefect_home = settings.prefect_home
        api_url = f"http://127.0.0.1:{settings.prefect_port}/api"
        ui_url = f"http://127.0.0.1:{settings.prefect_port}"
        # This process talks to Prefect too (work pool); keep it off ~/.prefect.
        os.environ["PREFECT_HOME"] = str(prefect_home)
        console.print(f"Starting Prefect server on 127.0.0.1:{settings.prefect_port} "
                      f"(log: {_e(settings.home / 'logs' / 'prefect-server.log')}) ...")
        t = time.monotonic()
        # start_prefect_server stops its own child on failure; register it as soon as it is up
        start_prefect_server(settings, check=signals.check, on_started=started)
        console.print(f"  Prefect server healthy in {time.monotonic() - t:.1f}s")
    else:
        prefect_home = None
        api_url = external.rstrip("/")
        ui_url = settings.prefect_ui_url or api_url.removesuffix("/api")
        source = "FLOWFORGE_PREFECT_API_URL" if settings.prefect_api_url else "PREFECT_API_URL"
        console.print(f"Using the Prefect server at {_e(api_url)} ({source}); not starting one.")
        try:
            wait_http_ok(f"{api_url}/health", 15, check=signals.check)
        except TimeoutError as exc:
            raise SupervisorError(f"the Prefect server at {api_url} is not reachable: {exc}") from exc

    # 2. work pool
    guard()
    try:
        created = ensure_work_pool(api_url, settings.work_pool)
    except Exception as exc:
        raise SupervisorError(f"could not create work pool {settings.work_pool!r}: {exc}") from exc
    console.print(f"Work pool {_e(repr(settings.work_pool))} " + ("created" if created else "exists"))
    if docker:
        pool, defaults = settings.docker_work_pool, docker_pool_defaults(settings)
        try:
            created = ensure_work_pool(api_url, pool, "docker", defaults)
        except Exception as exc:
            raise SupervisorError(f"could not create work pool {pool!r}: {exc}") from exc
        console.print(f"Work pool {_e(repr(pool))} (docker) " + ("created" if created else "exists"))
        if not created:
            warn_unhardened_pool(api_url, pool, defaults, console)
        check_runner_image(defaults["image"], console)
    reap_containers(api_url, console, quiet=not docker)

    # 3. worker(s), 4. API (the API starts while the workers register)
    guard()
    started(start_worker(settings, api_url, prefect_home))
    if docker:
        started(start_worker(settings, api_url, prefect_home, pool_type="docker"))
    guard()
    api = start_api(settings, api_url, prefect_home, app=api_app)
    started(api)
    console.print(f"Started worker (pool {_e(settings.work_pool)}) and API ({_e(api_app)}) on "
                  f"{_e(settings.api_host)}:{settings.api_port}; waiting for {_e(api_local)}/healthz ...")

    # 5. wait for the API, then make sure the worker really registered
    try:
        wait_http_ok(f"{api_local}/healthz", API_HEALTH_TIMEOUT, check=guard)
    except TimeoutError as exc:
        raise SupervisorError(f"the API is not healthy: {exc}\nlast lines of {api.log_path}:\n"
                              f"{api.log_tail()}") from exc
    wait_worker_online(api_url, settings.work_pool, check=guard)
    if docker:
        wait_worker_online(api_url, settings.docker_work_pool, check=guard)
    pids.state = "running"
    pids.write()
    elapsed = time.monotonic() - t0

    console.print(f"\n[green bold]FlowForge is up[/] (healthy in {elapsed:.1f}s)")
    console.print(f"  API docs    {_e(api_local)}/docs")
    console.print(f"  Prefect UI  {_e(ui_url)}")
    console.print(f"  Home        {_e(settings.home)}")
    console.print(f"  Logs        {_e(settings.home / 'logs')}")
    console.print("Press Ctrl-C to stop.")

    # 6. block
    while not signals.requested:
        for child in children:
            if not child.running():
                raise SupervisorError(f"{child.describe_exit()}")
        time.sleep(0.2)
    console.print(f"\n{signals.name} received.")
    return 0


__all__ = [
    "DEFAULT_API_APP",
    "RECORDER_TUNING",
    "Child",
    "PidFile",
    "StopRequested",
    "SupervisorError",
    "api_env",
    "check_port_free",
    "docker_pool_defaults",
    "ensure_work_pool",
    "external_prefect_url",
    "pool_user",
    "port_in_use",
    "prefect_server_env",
    "reap_containers",
    "run_up",
    "start_api",
    "start_prefect_server",
    "start_worker",
    "wait_http_ok",
    "wait_worker_online",
    "warn_unhardened_pool",
    "worker_env",
]
