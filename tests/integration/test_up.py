"""`flowforge up`: starts the Prefect server, a worker and the API; SIGTERM stops every child.

The API child is a throwaway ASGI app written to tmp (FLOWFORGE_API_APP + PYTHONPATH) whose
/healthz answers 200 and echoes the FLOWFORGE_*/PREFECT_* env it was given, so this file tests
the supervisor alone. One `flowforge up` with its own Prefect server is shared by the module;
the PREFECT_API_URL tests point further `flowforge up` runs at that server. Only the admin
key's test uses the suite's stack, whose API is the real one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
FLOWFORGE = BIN / "flowforge"
REPO = Path(__file__).resolve().parents[2]

FAKE_API = '''
import os
from fastapi import FastAPI

app = FastAPI()


@app.get("/healthz")
def healthz() -> dict:
    env = {k: v for k, v in os.environ.items() if k.startswith(("FLOWFORGE_", "PREFECT_"))}
    return {"status": "ok", "env": env, "cwd": os.getcwd()}
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    """True if the process, or anything left in its process group, still exists (zombies count)."""
    for probe in (lambda: os.kill(pid, 0), lambda: os.killpg(pid, 0)):
        try:
            probe()
            return True
        except ProcessLookupError:
            pass
    return False


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    if not FLOWFORGE.exists():
        subprocess.run([str(BIN / "pip"), "install", "-q", "-e", str(REPO), "--no-deps"], check=True)


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fakeapi")
    (d / "ff_up_fake_api.py").write_text(FAKE_API)
    return d


def up_env(app_dir: Path, app: str = "ff_up_fake_api:app", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FLOWFORGE_"))}
    env.update(FLOWFORGE_API_APP=app, FLOWFORGE_WORKER_QUERY_SECONDS="0.5",
               PYTHONPATH=os.pathsep.join([str(app_dir), str(REPO)]))
    env.update(extra)
    return env


@dataclass
class Up:
    home: Path
    api_port: int
    prefect_port: int
    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def pids(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.home / "run" / "pids.json").read_text())
        return data

    @property
    def auth(self) -> str:
        """The credential of the Prefect server this `up` started."""
        return (self.home / "prefect-auth").read_text().strip()

    def child_pids(self) -> dict[str, int]:
        return {name: c["pid"] for name, c in self.pids()["children"].items()}

    def wait_up(self, timeout: float) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if "FlowForge is up" in self.out.read_text():
                return time.monotonic() - start
            if self.process.poll() is not None:
                raise AssertionError(f"flowforge up exited {self.process.returncode}:\n{self.output}")
            time.sleep(0.2)
        raise AssertionError(f"flowforge up not up after {timeout}s:\n{self.output}")

    def kill(self) -> None:
        """Last-resort cleanup: the supervisor's own group (it stops its children on SIGTERM)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_up(home: Path, env: dict[str, str], api_port: int, prefect_port: int) -> Up:
    home.mkdir(parents=True, exist_ok=True)
    out, err = home.parent / f"{home.name}.out", home.parent / f"{home.name}.err"
    with out.open("wb") as o, err.open("wb") as e:
        process = subprocess.Popen(
            [str(FLOWFORGE), "up", "--home", str(home), "--api-port", str(api_port),
             "--prefect-port", str(prefect_port)],
            env=env, stdout=o, stderr=e, stdin=subprocess.DEVNULL, start_new_session=True)
    return Up(home, api_port, prefect_port, process, out, err)


async def _pool_and_workers(api_url: str, pool: str, auth: str) -> tuple[Any, list[Any]]:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api_url, auth_string=auth) as client:
        return await client.read_work_pool(pool), await client.read_workers_for_work_pool(pool)


def pool_and_workers(api_url: str, pool: str, auth: str) -> tuple[Any, list[Any]]:
    result: tuple[Any, list[Any]] = asyncio.run(_pool_and_workers(api_url, pool, auth))
    return result


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, app_dir: Path) -> Iterator[Up]:
    home = tmp_path_factory.mktemp("up") / "home"
    stack = start_up(home, up_env(app_dir), free_port(), free_port())
    try:
        took = stack.wait_up(90)
        print(f"flowforge up healthy after {took:.1f}s (fresh home)")
        yield stack
    finally:
        stack.kill()


def test_up_starts_server_worker_and_api(up: Up, app_dir: Path) -> None:
    out = up.out.read_text()
    api = f"http://127.0.0.1:{up.api_port}"
    prefect = f"http://127.0.0.1:{up.prefect_port}"
    assert f"{api}/docs" in out
    assert prefect in out
    assert str(up.home) in out and str(up.home / "logs") in out

    health = httpx.get(f"{api}/healthz", timeout=10)
    assert health.status_code == 200
    env = health.json()["env"]
    assert env["FLOWFORGE_PREFECT_API_URL"] == f"{prefect}/api"
    assert env["PREFECT_API_URL"] == f"{prefect}/api"
    assert env["FLOWFORGE_HOME"] == str(up.home)
    assert env["FLOWFORGE_WORK_POOL"] == "flowforge-process"
    assert env["FLOWFORGE_API_PORT"] == str(up.api_port)
    assert env["FLOWFORGE_WORKER_QUERY_SECONDS"] == "0.5"
    assert env["PREFECT_HOME"] == str(up.home / "prefect")

    assert httpx.get(f"{prefect}/api/health", timeout=10).status_code == 200
    assert (up.home / "prefect" / "prefect.db").exists()
    # A closed Prefect: its credential made on first start, private, handed to the children
    closed = httpx.post(f"{prefect}/api/flow_runs/filter", json={}, timeout=10)
    assert closed.status_code == 401, closed.text
    user, _, password = up.auth.partition(":")
    assert user == "flowforge" and len(password) >= 24
    assert httpx.post(f"{prefect}/api/flow_runs/filter", json={}, auth=(user, password),
                      timeout=10).status_code == 200
    assert env["PREFECT_API_AUTH_STRING"] == up.auth
    assert str(up.home / "prefect-auth") in out and up.auth not in out
    assert str(up.home / "admin.key") in out
    # The home is private: files 0600 and directories 0700, but for the generated project
    for path in [up.home, *up.home.rglob("*")]:
        if (up.home / "project") in (path, *path.parents):
            continue
        mode = path.lstat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"

    pids = up.pids()
    assert pids["state"] == "running" and pids["supervisor"] == up.process.pid
    assert set(pids["children"]) == {"prefect-server", "worker", "api"}
    assert all(alive(pid) for pid in up.child_pids().values())
    # both servers hold SQLite connections: their cyclic GC runs off the event loop
    for name, module in (("prefect-server", "prefect"), ("api", "uvicorn")):
        cmdline = Path(f"/proc/{up.child_pids()[name]}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:4] == [b"-m", b"flowforge.offloop_gc", module.encode()], cmdline
    for name in ("prefect-server", "worker", "api"):
        assert (up.home / "logs" / f"{name}.log").stat().st_size > 0
    # child output goes to the log files, not the terminal
    assert "Uvicorn running" not in up.output


def test_work_pool_exists_and_worker_registered(up: Up) -> None:
    from prefect.client.schemas.objects import WorkerStatus

    api_url = f"http://127.0.0.1:{up.prefect_port}/api"
    deadline = time.monotonic() + 15
    while True:
        pool, workers = pool_and_workers(api_url, "flowforge-process", up.auth)
        if any(w.status == WorkerStatus.ONLINE for w in workers) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert pool.type == "process"
    assert pool.base_job_template.get("job_configuration"), "process pool should get the default template"
    assert [w for w in workers if w.status == WorkerStatus.ONLINE], workers


def test_busy_port_fails_fast_with_a_clear_message(up: Up, app_dir: Path, tmp_path: Path) -> None:
    env = up_env(app_dir)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = [(["--api-port", str(port), "--prefect-port", str(free_port())], "--api-port"),
                 (["--api-port", str(free_port()), "--prefect-port", str(port)], "--prefect-port")]
        for args, option in cases:
            home = tmp_path / option.strip("-")
            start = time.monotonic()
            result = subprocess.run([str(FLOWFORGE), "up", "--home", str(home), *args], env=env,
                                    capture_output=True, text=True, timeout=30)
            assert result.returncode != 0
            assert time.monotonic() - start < 10
            assert f"Port {port}" in result.stderr and "already in use" in result.stderr, result.stderr
            assert option in result.stderr, result.stderr
            assert not (home / "logs" / "prefect-server.log").exists()


def test_prefect_api_url_set_uses_that_server_and_a_dead_child_is_restarted(
        up: Up, app_dir: Path, tmp_path: Path) -> None:
    prefect_api = f"http://127.0.0.1:{up.prefect_port}/api"
    # --prefect-port is the (busy) port of the first server: not checked, nothing started on it
    second = start_up(tmp_path / "home2",
                      up_env(app_dir, PREFECT_API_URL=prefect_api, FLOWFORGE_WORK_POOL="ff-external",
                             PREFECT_API_AUTH_STRING=up.auth),
                      free_port(), up.prefect_port)
    try:
        second.wait_up(60)
        assert "not starting one" in second.output
        assert set(second.child_pids()) == {"worker", "api"}
        assert not (second.home / "logs" / "prefect-server.log").exists()
        env = httpx.get(f"http://127.0.0.1:{second.api_port}/healthz", timeout=10).json()["env"]
        assert env["FLOWFORGE_PREFECT_API_URL"] == prefect_api
        assert env["FLOWFORGE_WORK_POOL"] == "ff-external"
        pool, workers = pool_and_workers(prefect_api, "ff-external", up.auth)
        assert pool.type == "process" and workers

        # a second `up` on the same home refuses to start and leaves the pid file alone
        again = subprocess.run(
            [str(FLOWFORGE), "up", "--home", str(second.home), "--api-port", str(free_port())],
            env=up_env(app_dir, PREFECT_API_URL=prefect_api, PREFECT_API_AUTH_STRING=up.auth),
            capture_output=True, text=True, timeout=30)
        assert again.returncode != 0 and "another `flowforge up`" in again.stderr, again.stderr
        assert second.pids()["supervisor"] == second.process.pid

        # a child dying is restarted after a backoff, and the others keep running
        pids = second.child_pids()
        os.killpg(pids["worker"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            worker = second.pids()["children"]["worker"]
            if worker.get("restarts") == 1 and worker.get("status") == "running":
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the worker was not restarted:\n{second.output}")
        assert worker["pid"] != pids["worker"] and alive(worker["pid"])
        assert "signal 9" in worker["last_exit"]
        assert second.process.poll() is None  # the supervisor goes on
        assert second.child_pids()["api"] == pids["api"] and alive(pids["api"])
        assert port_open(second.api_port)
        out = second.out.read_text()
        assert "worker" in out and "killed by signal 9" in out and "Restarted worker" in out, out
        _, workers = pool_and_workers(prefect_api, "ff-external", up.auth)
        assert workers  # the new worker registers itself
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(30) == 0, second.output
        assert not any(alive(pid) for pid in second.child_pids().values())
        final = second.pids()
        assert final["state"] == "stopped" and final["exit_code"] == 0
    finally:
        second.kill()
    # the first stack is untouched
    assert httpx.get(f"{prefect_api}/health", timeout=10).status_code == 200


def test_failed_start_stops_what_was_started(up: Up, app_dir: Path, tmp_path: Path) -> None:
    prefect_api = f"http://127.0.0.1:{up.prefect_port}/api"
    third = start_up(tmp_path / "home3",
                     up_env(app_dir, app="ff_up_no_such_module:app", PREFECT_API_URL=prefect_api,
                            PREFECT_API_AUTH_STRING=up.auth),
                     free_port(), free_port())
    try:
        third.process.wait(60)
        assert third.process.returncode != 0
        err = third.err.read_text()
        assert "api" in err and "ff_up_no_such_module" in err, err  # the API log tail is shown
        pids = third.child_pids()
        assert set(pids) == {"worker", "api"}
        assert not any(alive(pid) for pid in pids.values())
        assert third.pids()["state"] == "stopped"
    finally:
        third.kill()


def test_the_admin_key_is_written_to_its_file_and_never_printed(stack: Stack) -> None:
    """The fake API above writes no key: the first admin key is the real API's, so this is the
    suite's stack (`flowforge up` with the real API on a fresh home, its stdout and stderr
    captured to up.log). The output names the file; the key is in neither it nor any log."""
    key = stack.admin_key
    assert key.startswith("ffk_") and len(key) >= 40
    log = stack.home / "up.log"
    deadline = time.monotonic() + 60
    while "FlowForge is up" not in (output := log.read_text()):
        assert time.monotonic() < deadline, output
        time.sleep(0.5)
    assert str(stack.home / "admin.key") in output
    assert key[4:] not in output  # the key, with its prefix or without
    logs = [path for path in (stack.home / "logs").rglob("*") if path.is_file()]
    assert any(path.name.startswith("api") for path in logs), logs
    for path in logs:
        assert key[4:] not in path.read_text(errors="replace"), path


def test_sigterm_stops_every_child_and_exits_0(up: Up) -> None:
    """Runs last in the module: stops the shared stack."""
    pids = up.child_pids()
    assert all(alive(pid) for pid in pids.values())
    start = time.monotonic()
    up.process.send_signal(signal.SIGTERM)
    assert up.process.wait(20) == 0, up.output
    print(f"stopped in {time.monotonic() - start:.1f}s")
    assert not any(alive(pid) for pid in pids.values()), pids
    assert not port_open(up.api_port)
    assert not port_open(up.prefect_port)
    final = up.pids()
    assert final["state"] == "stopped" and final["exit_code"] == 0
    assert "SIGTERM received" in up.out.read_text()
