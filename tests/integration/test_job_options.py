"""Job and run options on the real stack: retries, timeouts, continue_on_error, logs,
message jobs to a real HTTP receiver, variables passed between jobs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import create_workflow, jobs_by_name, run_workflow

pytestmark = pytest.mark.integration


class Receiver:
    """A real HTTP server on 127.0.0.1 that records every POST body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                outer.bodies.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_retries_then_success(api: httpx.Client, shared_dir: Path) -> None:
    counter = shared_dir / "attempts"
    create_workflow(api, {
        "name": "flaky",
        "inputs": {"counter": {"type": "string"}},
        "jobs": [{"name": "flaky", "runtime": "bash", "retries": 2, "retry_delay": 0.2,
                  "env": {"COUNTER": "{{ inputs.counter }}"},
                  "script": 'echo x >> "$COUNTER"; [ "$(wc -l < "$COUNTER")" -ge 3 ]'}],
    })
    run = run_workflow(api, "flaky", {"counter": str(counter)})
    assert run["state"] == "COMPLETED", run
    assert counter.read_text().count("x") == 3
    assert run["jobs"][0]["attempts"] == 3


def test_timeouts_and_continue_on_error(api: httpx.Client) -> None:
    create_workflow(api, {
        "name": "slow-and-sloppy",
        "jobs": [
            {"name": "slow", "runtime": "bash", "timeout": 1, "continue_on_error": True,
             "script": "sleep 30"},
            {"name": "after", "runtime": "bash", "needs": [{"job": "slow", "on": "completion"}],
             "script": "echo carried on"},
        ],
    })
    run = run_workflow(api, "slow-and-sloppy")
    jobs = jobs_by_name(run)
    assert jobs["slow"]["state"] == "FAILED" and "timed out after 1" in jobs["slow"]["error"]
    assert jobs["after"]["state"] == "COMPLETED"
    assert run["state"] == "COMPLETED"  # the only failure was allowed to fail

    create_workflow(api, {"name": "run-timeout", "settings": {"timeout": 2},
                          "jobs": [{"name": "forever", "runtime": "bash", "script": "sleep 60"}]})
    run = run_workflow(api, "run-timeout", timeout=90)
    assert run["state"] == "FAILED", run
    assert run["jobs"][0]["state"] in ("CANCELLED", "FAILED")


def test_logs_stream_job_output(api: httpx.Client) -> None:
    create_workflow(api, {"name": "chatty", "jobs": [
        {"name": "talker", "runtime": "python",
         "script": "import sys\nprint('hello from talker')\nprint('to stderr', file=sys.stderr)"}]})
    run = run_workflow(api, "chatty")
    import time

    deadline = time.monotonic() + 30
    while True:
        logs = api.get(f"/runs/{run['id']}/logs").json()
        lines = [line for line in logs if line["job"] == "talker"]
        if any("hello from talker" in line["message"] for line in lines) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert any(line["message"] == "hello from talker" and line["level"] == "INFO" for line in lines)
    assert any(line["message"] == "to stderr" and line["level"] == "WARNING" for line in lines)


def test_message_job_on_failure_reaches_a_real_receiver(api: httpx.Client, receiver: Receiver) -> None:
    create_workflow(api, {
        "name": "alerting",
        "inputs": {"period": {"type": "string", "default": "2026-11"}},
        "jobs": [
            {"name": "load", "runtime": "bash", "script": "echo 'table locked' >&2; exit 2"},
            {"name": "alert", "type": "message", "needs": [{"job": "load", "on": "failure"}],
             "to": f"json://127.0.0.1:{receiver.port}/alerts",
             "title": "load failed",
             "body": "load failed for {{ inputs.period }}: {{ jobs.load.error }}"},
        ],
    })
    run = run_workflow(api, "alerting")
    jobs = jobs_by_name(run)
    assert jobs["alert"]["state"] == "COMPLETED", jobs["alert"]
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["title"] == "load failed"
    assert "load failed for 2026-11: exit code 2" in body["message"]
    assert "table locked" in body["message"]


def test_message_delivery_failure_fails_the_job(api: httpx.Client) -> None:
    from tests.conftest import free_port

    create_workflow(api, {"name": "undeliverable", "jobs": [
        {"name": "alert", "type": "message", "to": f"json://127.0.0.1:{free_port()}/nobody",
         "body": "hello"}]})
    run = run_workflow(api, "undeliverable")
    assert run["state"] == "FAILED"
    assert "delivery failed" in run["jobs"][0]["error"]


def test_variables_pass_between_jobs(api: httpx.Client) -> None:
    create_workflow(api, {"name": "shared-state", "jobs": [
        {"name": "writer", "runtime": "python",
         "script": "import flowforge_helpers as ff\nff.set_variable('ff_test_cursor', {'page': 7})"},
        {"name": "reader", "runtime": "python", "needs": ["writer"],
         "script": "import flowforge_helpers as ff\nff.output(ff.get_variable('ff_test_cursor'))"},
    ]})
    run = run_workflow(api, "shared-state")
    assert run["state"] == "COMPLETED", run
    assert jobs_by_name(run)["reader"]["output"] == {"page": 7}
