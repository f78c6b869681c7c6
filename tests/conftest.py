"""Shared fixtures: the whole FlowForge stack, started for real with `flowforge up`.

The integration tests talk to a real Prefect server, a real process worker and the real API
over HTTP, exactly as a user does after the README's first command; the fixture starts the
stack once per session on free 127.0.0.1 ports in a temporary home and stops it by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.docker import docker_host, runner_image  # noqa: F401 - fixture re-export
from tests.fixtures.postgres import postgres_server, postgres_url  # noqa: F401 - fixture re-export
from tests.fixtures.redis import redis_url  # noqa: F401 - fixture re-export
from tests.fixtures.sshd import ssh_client_key, sshd_factory, sshd_pair  # noqa: F401 - fixtures

BIN = Path(sys.executable).parent
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def free_port(span: int = 1) -> int:
    """A free port on 127.0.0.1, with the `span - 1` ports after it free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if all(_bindable(base + i) for i in range(1, span)):
            return base


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class Stack:
    home: Path
    api_url: str
    prefect_url: str
    process: subprocess.Popen[bytes]

    @property
    def admin_key(self) -> str:
        """The first admin key, which `flowforge up` had the API write into the home."""
        return (self.home / "admin.key").read_text().strip()

    @property
    def prefect_auth(self) -> str:
        """The credential of the Prefect server `up` started (`user:password`)."""
        return (self.home / "prefect-auth").read_text().strip()

    def prefect_env(self, **extra: str) -> dict[str, str]:
        """A clean environment for a process that talks to this stack's Prefect."""
        return _child_env(PREFECT_API_URL=self.prefect_url,
                          PREFECT_API_AUTH_STRING=self.prefect_auth, **extra)

    def prefect_http(self, **kwargs: Any) -> httpx.Client:
        """Plain HTTP to this stack's Prefect API, with its credential."""
        user, _, password = self.prefect_auth.partition(":")
        return httpx.Client(base_url=self.prefect_url, auth=(user, password),
                            timeout=kwargs.pop("timeout", 60), **kwargs)

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        """An API client sending `key` (default: the admin key)."""
        # Generous: on a loaded two-core machine Prefect on SQLite answers slowly, and the
        # API's Prefect client retries timeouts and 503s (Prefect's own backoff) before it
        # gives up; a request that takes over a minute then is slow, not broken.
        headers = {"Authorization": f"Bearer {key or self.admin_key}", **kwargs.pop("headers", {})}
        return httpx.Client(base_url=self.api_url, timeout=180, headers=headers, **kwargs)


@pytest.fixture
def tmp_path(tmp_path: Path) -> Path:
    """pytest's `tmp_path`, searchable (o+x, not listable) on the way down from /tmp: local jobs
    run as `nobody` under a root worker, and the tests hand them paths in here, as a user
    hands a job a directory it may use. A job that writes here needs `shared_dir`."""
    for directory in (tmp_path, *tmp_path.parents):
        if directory == Path(tempfile.gettempdir()) or directory == directory.parent:
            break
        directory.chmod(directory.stat().st_mode | 0o001)
    return tmp_path


@pytest.fixture
def shared_dir(tmp_path: Path) -> Path:
    """A directory any job may write to (as /tmp: world-writable, sticky)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    return shared


def with_admin_key(client: Any, home: Path) -> Any:
    """`client` (a started TestClient of an app on `home`) sending the home's admin key."""
    client.headers["Authorization"] = f"Bearer {(home / 'admin.key').read_text().strip()}"
    return client


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "FLOWFORGE_"))}
    env.update(extra)
    return env


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None,
              log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with {process.returncode} before {url} was "
                               f"ready:\n{tail}")
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code == 200:
                return
            last = response.text[:500]
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout}s: {last}")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def start_stack(home: Path, *args: str, span: int = 1, **env: str) -> Iterator[Stack]:
    """`flowforge up --home HOME [args]` on free ports with extra `env`; stopped by PID on exit.

    `span`: how many consecutive ports the API and the Prefect server each need (replicas)."""
    api_port = free_port(span)
    prefect_port = free_port(span)
    while abs(prefect_port - api_port) < span:
        prefect_port = free_port(span)
    log = home / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "flowforge"), "up", "--home", str(home), "--api-port", str(api_port),
             "--prefect-port", str(prefect_port), *args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # The Prefect deadline just under the test client's 180 s: a CI machine running
            # the whole suite has made single run reads take over a minute.
            # The receivers the jobs talk to listen on 127.0.0.1, as an operator's internal
            # services would on a private address: allowed, as the operator would.
            env=_child_env(**{"FLOWFORGE_WORKER_QUERY_SECONDS": "0.5",
                              "FLOWFORGE_SYNC_INTERVAL": "2",
                              "FLOWFORGE_PREFECT_DEADLINE": "170",
                              "FLOWFORGE_EGRESS_ALLOW": "127.0.0.1", **env}),
            start_new_session=True,
        )
    api_url = f"http://127.0.0.1:{api_port}"
    try:
        wait_http(f"{api_url}/healthz", 180, process, log)
        yield Stack(home, api_url, f"http://127.0.0.1:{prefect_port}/api", process)
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("ffhome")) as started:
        yield started


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as client:
        yield client


def worker_record(stack: Stack, name: str = "worker") -> dict[str, Any]:
    """The supervisor's record of one child (`run/pids.json`): pid, argv, restarts, status."""
    record: dict[str, Any] = json.loads(
        (stack.home / "run" / "pids.json").read_text())["children"][name]
    return record


def children_of(pid: int) -> list[int]:
    """The PIDs whose parent is `pid`, from /proc."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def fork_server(stack: Stack) -> int:
    """The PID of the warm runner's fork server (the worker's `multiprocessing` child)."""
    worker = worker_record(stack)["pid"]
    for pid in children_of(worker):
        with contextlib.suppress(OSError):
            if b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    raise AssertionError(f"worker {worker} has no fork server")


def wait_run(api: httpx.Client, run_id: str, timeout: float = 120) -> dict[str, Any]:
    """Poll GET /runs/{id} until the run is terminal; returns the final body."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = api.get(f"/runs/{run_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        if body["state"] in TERMINAL:
            return body
        time.sleep(0.3)
    raise TimeoutError(f"run {run_id} not terminal after {timeout}s: {body}")


def create_workflow(api: httpx.Client, doc: dict[str, Any] | str) -> dict[str, Any]:
    """POST a workflow (dict as JSON, str as YAML), replacing any earlier one of that name."""
    if isinstance(doc, str):
        import yaml

        name = yaml.safe_load(doc)["name"]
        api.delete(f"/workflows/{name}")
        response = api.post("/workflows", content=doc,
                            headers={"Content-Type": "application/yaml"})
    else:
        api.delete(f"/workflows/{doc['name']}")
        response = api.post("/workflows", json=doc)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["sync"]["status"] == "synced", body
    return body


def run_workflow(api: httpx.Client, name: str, inputs: dict[str, Any] | None = None,
                 timeout: float = 120) -> dict[str, Any]:
    response = api.post(f"/workflows/{name}/runs", json={"inputs": inputs or {}})
    assert response.status_code == 201, response.text
    return wait_run(api, response.json()["run_id"], timeout)


def jobs_by_name(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["name"]: job for job in run["jobs"]}
