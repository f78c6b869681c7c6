"""A Prefect server that accepts connections but does not answer (as one does when overloaded).

Each HTTP call has its own timeout, but Prefect's client retries timeouts with backoff, so
before `prefect_deadline` a request could hang for minutes. Now the whole of one request's
Prefect work is capped: the API answers 503 in about the deadline, and a definition it was
storing is kept, marked `pending`. The silent server is a real listening socket on 127.0.0.1.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import ApiSettings as Settings
from tests.conftest import with_admin_key


@pytest.fixture
def silent_prefect() -> Iterator[str]:
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)  # read nothing, answer nothing

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/api"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_silent_prefect_gets_a_503_within_the_deadline(tmp_path: Path,
                                                         silent_prefect: str) -> None:
    settings = Settings(home=tmp_path, prefect_api_url=silent_prefect, prefect_timeout=30,
                        prefect_deadline=1.5, sync_interval=3600, prefect_probe_timeout=1)
    with TestClient(create_app(settings)) as api:
        with_admin_key(api, tmp_path)
        started = time.monotonic()
        created = api.post("/workflows", json={
            "name": "w", "jobs": [{"name": "a", "runtime": "bash", "script": "true"}]})
        assert created.status_code == 201, created.text
        assert created.json()["sync"]["status"] == "pending"
        # The write asked Prefect's health check first and did not wait out the deadline.
        assert "did not answer its health check within 1s" in created.json()["sync"]["error"]
        assert time.monotonic() - started < 5

        run = api.post("/workflows/w/runs", json={"inputs": {}})
        assert run.status_code == 503, run.text
        error = run.json()["error"]
        assert error["code"] == "prefect_unavailable" and "within 1.5s" in error["message"]
        # Two requests, each capped (the run start tries one sync, then gives up); without the
        # cap the 30 s per-call timeout and Prefect's retries would take minutes.
        assert time.monotonic() - started < 15
        assert api.get("/workflows/w").json()["spec"]["jobs"][0]["name"] == "a"  # kept


def test_a_timed_out_call_says_so(silent_prefect: str, tmp_path: Path) -> None:
    """httpx's timeouts print as an empty string: the row's error read 'is unreachable: '
    (seen in CI), which told the user nothing. It now names the timeout."""
    import asyncio

    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from flowforge.controlplane.client import PrefectTarget, prefect_client
    from flowforge.core.errors import PrefectUnavailableError

    target = PrefectTarget(api_url=silent_prefect, project_dir=tmp_path, work_pool="p",
                          timeout=0.3)

    async def call() -> None:
        async with prefect_client(target) as client:
            await client.read_work_pool("p")

    with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}), \
            pytest.raises(PrefectUnavailableError) as caught:
        asyncio.run(call())
    assert "did not answer within 0.3s, retries included (ReadTimeout" in caught.value.message
