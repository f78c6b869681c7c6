"""The Prefect sync converges: a workflow stored while Prefect was down is deployed once it is up."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import BIN, Stack, _child_env, free_port, stop_process, wait_http

pytestmark = pytest.mark.integration

DOC = {"name": "converge-me", "jobs": [{"name": "a", "runtime": "bash", "script": "true"}]}


def test_sync_converges_after_prefect_was_down(tmp_path: Path) -> None:
    prefect_port, api_port = free_port(), free_port()
    prefect_url = f"http://127.0.0.1:{prefect_port}/api"
    env = _child_env(FLOWFORGE_HOME=str(tmp_path / "home"), FLOWFORGE_PREFECT_API_URL=prefect_url,
                     FLOWFORGE_SYNC_INTERVAL="1", FLOWFORGE_PREFECT_TIMEOUT="3")
    api_log = tmp_path / "api.log"
    with api_log.open("wb") as out:
        api_proc = subprocess.Popen(
            [str(BIN / "python"), "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
             "--port", str(api_port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = None
    try:
        base = f"http://127.0.0.1:{api_port}"
        wait_http(f"{base}/docs", 60, api_proc, api_log)
        key = (tmp_path / "home" / "admin.key").read_text().strip()
        with httpx.Client(base_url=base, timeout=30,
                          headers={"Authorization": f"Bearer {key}"}) as api:
            created = api.post("/workflows", json=DOC)
            assert created.status_code == 201, created.text
            assert created.json()["sync"]["status"] == "pending"
            assert "unreachable" in created.json()["sync"]["error"]
            run = api.post("/workflows/converge-me/runs", json={"inputs": {}})
            assert run.status_code == 503
            assert run.json()["error"]["code"] == "prefect_unavailable"
            health = api.get("/healthz")
            assert health.status_code == 503 and "prefect" in health.json()["error"]["details"]

            server_log = tmp_path / "server.log"
            with server_log.open("wb") as out:
                server = subprocess.Popen(
                    [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                     "--port", str(prefect_port)],
                    env=_child_env(PREFECT_HOME=str(tmp_path / "prefect"),
                                   PREFECT_SERVER_ANALYTICS_ENABLED="false"),
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            wait_http(f"{prefect_url}/health", 120, server, server_log)
            deadline = time.monotonic() + 60
            while api.get("/workflows/converge-me").json()["sync"]["status"] != "synced":
                assert time.monotonic() < deadline, api.get("/workflows/converge-me").json()
                time.sleep(0.5)
            from prefect.client.orchestration import SyncPrefectClient

            with SyncPrefectClient(prefect_url) as client:
                deployment = client.read_deployment_by_name("converge-me/converge-me")
                assert deployment.entrypoint == "flows/converge_me.py:converge_me"

            # `flowforge sync` asks the API to sync everything now and reports per workflow
            out = subprocess.run([str(BIN / "flowforge"), "sync", "--api-url", base],
                                 capture_output=True, text=True, timeout=60, env=env)
            assert out.returncode == 0, out.stderr
            assert "converge-me" in out.stdout and "synced" in out.stdout
    finally:
        stop_process(api_proc)
        if server is not None:
            stop_process(server)


def test_up_warns_about_a_docker_pool_without_the_hardening(stack: Stack, tmp_path: Path) -> None:
    """A docker pool keeps the template it was made with; one from an older FlowForge (here:
    Prefect's own defaults) gets a warning naming what differs, FlowForge's own none."""
    import io
    import uuid

    from rich.console import Console

    from flowforge.stack.docker_pool import (
        HARDENING_KEYS,
        docker_pool_defaults,
        warn_unhardened_pool,
    )
    from flowforge.stack.settings import StackSettings as Settings
    from flowforge.stack.workers import ensure_work_pool

    defaults = docker_pool_defaults(Settings(home=tmp_path))
    legacy, ours = (f"{kind}-{uuid.uuid4().hex[:8]}" for kind in ("legacy", "hardened"))
    assert ensure_work_pool(stack.prefect_url, legacy, "docker", auth=stack.prefect_auth)  # Prefect's template
    assert ensure_work_pool(stack.prefect_url, ours, "docker", defaults, stack.prefect_auth)
    try:
        out = io.StringIO()
        console = Console(file=out, width=400)
        assert warn_unhardened_pool(stack.prefect_url, legacy, defaults, console,
                                    stack.prefect_auth) == \
            list(HARDENING_KEYS)
        assert "does not have FlowForge's container hardening" in out.getvalue()
        assert f"prefect work-pool delete {legacy}" in out.getvalue()
        out.truncate(0)
        assert warn_unhardened_pool(stack.prefect_url, ours, defaults, console, stack.prefect_auth) == []
        assert out.getvalue() == ""
    finally:
        for name in (legacy, ours):
            stack.prefect_http().delete(f"/work_pools/{name}")
