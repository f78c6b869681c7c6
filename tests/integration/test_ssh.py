"""SSH targets through the whole stack: /servers → Prefect variables and Secret blocks → the
worker's flow run → real sshd instances on 127.0.0.1."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import create_workflow, free_port, jobs_by_name, run_workflow, wait_run
from tests.fixtures.sshd import (
    PASSWORD,
    USER,
    ClientKey,
    Sshd,
    SshdFactory,
    alive,
    shared_dir,
    wait_for_file,
    wait_gone,
)
from tests.integration.test_job_types import logs_of

pytestmark = pytest.mark.integration


def server_body(name: str, server: Sshd | None, key: ClientKey | None = None,
                **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "host": "127.0.0.1",
                            "port": server.port if server else free_port(), "username": USER,
                            "host_key": server.host_key if server else None}
    if key is not None:
        body["private_key"] = key.private
    body.update(extra)
    return body


def put_server(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    api.delete(f"/servers/{body['name']}")
    response = api.post("/servers", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def test_servers_api(api: httpx.Client, sshd_pair: tuple[Sshd, Sshd],
                     ssh_client_key: ClientKey) -> None:
    a, b = sshd_pair
    created = put_server(api, server_body("api-a", a, ssh_client_key, tags=["api"]))
    assert created["breaker"]["state"] == "closed" and created["tags"] == ["api"]
    assert "private_key" not in created and ssh_client_key.private not in str(created)
    assert api.post("/servers", json=server_body("api-a", a, ssh_client_key)).status_code == 409
    one = api.get("/servers/api-a").json()
    assert one["host_key"] == a.host_key and "password" not in one
    assert "api-a" in [s["name"] for s in api.get("/servers").json()]
    test = api.post("/servers/api-a/test").json()
    assert test["ok"] is True and test["latency_ms"] > 0
    # PUT without a credential keeps the stored one.
    replaced = api.put("/servers/api-a", json={k: v for k, v in server_body("api-a", a).items()
                                               if k != "name"} | {"tags": ["x"]})
    assert replaced.status_code == 200 and replaced.json()["tags"] == ["x"]
    assert api.post("/servers/api-a/test").json()["ok"] is True
    # Password login, and the exact failures /test reports.
    put_server(api, server_body("api-pw", a, password=PASSWORD))
    assert api.post("/servers/api-pw/test").json()["ok"] is True
    put_server(api, server_body("api-badpw", a, password="wrong"))
    assert api.post("/servers/api-badpw/test").json()["reason"] == "auth_failed"
    put_server(api, server_body("api-refused", None, ssh_client_key))
    assert api.post("/servers/api-refused/test").json()["reason"] == "refused"
    put_server(api, server_body("api-changed", a, ssh_client_key, host_key=b.host_key))
    changed = api.post("/servers/api-changed/test").json()
    assert changed["reason"] == "host_key_mismatch" and "host key mismatch" in changed["message"]
    put_server(api, server_body("api-unknown", a, ssh_client_key, host_key=None))
    assert api.post("/servers/api-unknown/test").json()["reason"] == "host_key_unknown"
    put_server(api, server_body("api-tofu", a, ssh_client_key, host_key=None,
                                host_key_policy="accept-new"))
    assert api.post("/servers/api-tofu/test").json()["host_key"] == a.host_key
    assert api.get("/servers/api-tofu").json()["host_key"] == a.host_key
    # Invalid requests name their field; nothing is stored.
    for body, field in [
        (server_body("Bad_Name", a, ssh_client_key), "name"),
        (server_body("api-nocred", a), "private_key"),
        (server_body("api-badkey", a, private_key="not a key"), "private_key"),
        (server_body("api-badhk", a, ssh_client_key, host_key="nonsense"), "host_key"),
        (server_body("api-badtag", a, ssh_client_key, tags=["Bad Tag"]), "tags[0]"),
        (server_body("api-port", a, ssh_client_key, port=70000), "port"),
    ]:
        response = api.post("/servers", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"][0]["field"] == field, response.text
    assert api.get("/servers/api-nocred").status_code == 404
    # The credential's Secret block is neither listed nor writable through /secrets.
    assert not [s for s in api.get("/secrets").json() if s["name"].startswith("flowforge-ssh-")]
    assert api.put("/secrets/flowforge-ssh-api-a", json={"value": "x"}).status_code == 422
    for name in ("api-a", "api-pw", "api-badpw", "api-refused", "api-changed", "api-unknown",
                 "api-tofu"):
        assert api.delete(f"/servers/{name}").status_code == 204
    assert api.delete("/servers/api-a").status_code == 404


def test_a_job_on_two_servers_through_the_stack(api: httpx.Client, sshd_pair: tuple[Sshd, Sshd],
                                                ssh_client_key: ClientKey) -> None:
    a, b = sshd_pair
    put_server(api, server_body("web1", a, ssh_client_key, tags=["web"]))
    put_server(api, server_body("web2", b, ssh_client_key, tags=["web"]))
    create_workflow(api, {
        "name": "ssh-fanout",
        "inputs": {"greeting": {"type": "string", "default": "hi"}},
        "jobs": [
            {"name": "remote", "runtime": "python", "target": {"ssh": {"servers": ["web1", "web2"]}},
             "env": {"GREETING": "{{ inputs.greeting }}"},
             "script": "import os, time, flowforge_helpers as ff\n"
                       "time.sleep(2)\n"
                       "print('hello from', os.environ['FLOWFORGE_JOB_DIR'])\n"
                       "ff.output({'greeting': os.environ['GREETING'], 'n': ff.input()['inputs']['greeting']})\n"
                       "ff.set_condition(True)\n"},
            {"name": "by_tag", "runtime": "bash", "needs": [{"job": "remote", "on": "true"}],
             "target": {"ssh": {"tags": ["web"]}},
             "script": 'source "$FLOWFORGE_HELPERS/flowforge.sh"\nff_output "$(ff_input | python3 -c \'import json,sys; print(json.dumps(sorted(json.load(sys.stdin)["jobs"]["remote"]["output"]["servers"])))\')"'},
            {"name": "local_sum", "runtime": "python", "needs": ["by_tag"],
             "script": "import flowforge_helpers as ff\n"
                       "s = ff.input()['jobs']['by_tag']['output']['servers']\n"
                       "ff.output(sorted(s))\n"},
        ],
    })
    started = time.monotonic()
    run = run_workflow(api, "ssh-fanout", {"greeting": "hey $(id)"})
    elapsed = time.monotonic() - started
    assert run["state"] == "COMPLETED", run
    jobs = jobs_by_name(run)
    servers = jobs["remote"]["output"]["servers"]
    assert set(servers) == {"web1", "web2"}
    for result in servers.values():
        assert result == {"exit_code": 0, "error": None,
                          "output": {"greeting": "hey $(id)", "n": "hey $(id)"}}
    assert jobs["by_tag"]["output"]["servers"]["web1"]["output"] == ["web1", "web2"]
    assert jobs["local_sum"]["output"] == ["web1", "web2"]
    assert elapsed < 60, elapsed
    lines = [line["message"] for line in logs_of(api, run["id"], "remote", "[web2] hello")]
    assert any(m.startswith("[web1] hello from /tmp/flowforge-") for m in lines), lines
    assert any(m.startswith("[web2] hello from /tmp/flowforge-") for m in lines), lines
    # web1 is in use: it cannot be deleted; an unknown server is a 422 naming the job.
    conflict = api.delete("/servers/web1")
    assert conflict.status_code == 409 and conflict.json()["error"]["details"]["workflows"] == ["ssh-fanout"]
    bad = api.post("/workflows", json={"name": "ssh-unknown", "jobs": [
        {"name": "j", "runtime": "bash", "script": "true", "target": {"ssh": {"servers": ["nope"]}}}]})
    assert bad.status_code == 422
    detail = bad.json()["error"]["details"][0]
    assert detail == {"field": "jobs[0].target.ssh.servers[0]", "job": "j",
                      "message": "job 'j': unknown server 'nope' (POST /servers registers it)"}


def test_failing_server_breaker_and_partial(api: httpx.Client, sshd_pair: tuple[Sshd, Sshd],
                                           ssh_client_key: ClientKey) -> None:
    put_server(api, server_body("good", sshd_pair[0], ssh_client_key))
    put_server(api, server_body("gone", None, ssh_client_key))  # nothing listens there
    job = {"runtime": "bash", "script": "echo ok", "continue_on_error": True}
    create_workflow(api, {
        "name": "ssh-breaker",
        "jobs": [  # one after another, whatever the outcome
            {"name": "both", **job, "target": {"ssh": {"servers": ["good", "gone"]}}},
            {"name": "partial", **job, "needs": [{"job": "both", "on": "completion"}],
             "target": {"ssh": {"servers": ["good", "gone"], "allow_partial": True}}},
            {"name": "third", **job, "needs": [{"job": "partial", "on": "completion"}],
             "target": {"ssh": {"servers": ["gone"]}}},
            {"name": "fast", **job, "needs": [{"job": "third", "on": "completion"}],
             "target": {"ssh": {"servers": ["gone"]}}},
        ],
    })
    run = run_workflow(api, "ssh-breaker")
    jobs = jobs_by_name(run)
    assert jobs["both"]["state"] == "FAILED"
    assert "failed on 1 of 2 servers: gone:" in jobs["both"]["error"]
    assert jobs["both"]["output"]["servers"]["good"]["exit_code"] == 0  # kept on failure
    assert jobs["partial"]["state"] == "COMPLETED"
    assert "connection refused" in jobs["third"]["error"]
    assert "circuit breaker open after 3 failed connects" in jobs["fast"]["error"]
    breaker = api.get("/servers/gone").json()["breaker"]
    assert breaker["state"] == "open" and breaker["consecutive_failures"] == 3
    assert "connection refused" in breaker["last_error"]
    assert api.get("/servers/good").json()["breaker"]["state"] == "closed"


def test_cancel_kills_the_remote_job(api: httpx.Client, sshd_pair: tuple[Sshd, Sshd],
                                     ssh_client_key: ClientKey, tmp_path: Path) -> None:
    put_server(api, server_body("cancel-box", sshd_pair[0], ssh_client_key))
    pidfile = shared_dir(tmp_path) / "pid"
    create_workflow(api, {
        "name": "ssh-cancel",
        "inputs": {"pidfile": {"type": "string"}},
        "jobs": [{"name": "sleeper", "runtime": "bash", "env": {"PIDFILE": "{{ inputs.pidfile }}"},
                  "target": {"ssh": {"servers": ["cancel-box"]}},
                  "script": 'echo $$ > "$PIDFILE"\nsleep 300\n'}],
    })
    run_id = api.post("/workflows/ssh-cancel/runs",
                      json={"inputs": {"pidfile": str(pidfile)}}).json()["run_id"]
    pid = int(wait_for_file(pidfile, timeout=90))
    assert alive(pid)
    assert api.post(f"/runs/{run_id}/cancel").status_code == 202
    run = wait_run(api, run_id, timeout=90)
    assert run["state"] == "CANCELLED", run
    wait_gone(pid, timeout=30)


def test_server_going_away_mid_run(api: httpx.Client, sshd_factory: SshdFactory,
                                   ssh_client_key: ClientKey, tmp_path: Path) -> None:
    box = sshd_factory.start()
    put_server(api, server_body("doomed-box", box, ssh_client_key))
    marker = shared_dir(tmp_path) / "started"
    create_workflow(api, {
        "name": "ssh-gone",
        "inputs": {"marker": {"type": "string"}},
        "jobs": [{"name": "j", "runtime": "bash", "env": {"MARKER": "{{ inputs.marker }}"},
                  "target": {"ssh": {"servers": ["doomed-box"]}},
                  "script": 'echo 1 > "$MARKER"\nsleep 5\n'}],
    })
    run_id = api.post("/workflows/ssh-gone/runs",
                      json={"inputs": {"marker": str(marker)}}).json()["run_id"]
    wait_for_file(marker, timeout=90)
    box.kill()
    run = wait_run(api, run_id, timeout=90)
    assert run["state"] == "FAILED"
    assert "connection lost" in run["jobs"][0]["error"], run



def test_one_of_two_servers_killed_mid_job_keeps_the_others_result(
        api: httpx.Client, sshd_factory: SshdFactory, ssh_client_key: ClientKey,
        tmp_path: Path) -> None:
    """A fault: one server dies (sshd and its sessions SIGKILLed) while the job runs on two;
    that server's result fails with the reason, the other's finishes and is kept."""
    steady, doomed = sshd_factory.start(), sshd_factory.start()
    put_server(api, server_body("steady-box", steady, ssh_client_key))
    put_server(api, server_body("dying-box", doomed, ssh_client_key))
    markers = shared_dir(tmp_path)
    create_workflow(api, {
        "name": "ssh-one-dies",
        "inputs": {"markers": {"type": "string"}},
        "jobs": [{"name": "j", "runtime": "bash", "env": {"MARKERS": "{{ inputs.markers }}"},
                  "target": {"ssh": {"servers": ["steady-box", "dying-box"]}},
                  "script": 'source "$FLOWFORGE_HELPERS/flowforge.sh"\n'
                            'echo $$ > "$MARKERS/started-$$"\nsleep 4\nff_output \'{"done": true}\'\n'}],
    })
    run_id = api.post("/workflows/ssh-one-dies/runs",
                      json={"inputs": {"markers": str(markers)}}).json()["run_id"]
    deadline = time.monotonic() + 90
    while len(list(markers.glob("started-*"))) < 2:
        assert time.monotonic() < deadline, "the job never started on both servers"
        time.sleep(0.1)
    doomed.kill()
    run = wait_run(api, run_id, timeout=90)
    job = jobs_by_name(run)["j"]
    assert run["state"] == "FAILED" and job["state"] == "FAILED", run
    assert "failed on 1 of 2 servers: dying-box:" in job["error"], job
    assert "connection lost" in job["error"], job
    servers = job["output"]["servers"]
    assert servers["steady-box"] == {"exit_code": 0, "error": None, "output": {"done": True}}
    assert servers["dying-box"]["error"] and servers["dying-box"]["exit_code"] != 0


def test_moving_a_server_with_its_credential_pins_the_new_host_key(
        api: httpx.Client, sshd_pair: tuple[Sshd, Sshd], ssh_client_key: ClientKey) -> None:
    """Two sshd with different host keys stand for the old and the new address. The key pinned
    for the old one is dropped on the move, never trusted for the new one, and the next
    connection pins the new server's own key."""
    a, b = sshd_pair
    assert a.host_key != b.host_key
    body = server_body("api-move", a, ssh_client_key, host_key=None,
                       host_key_policy="accept-new")
    put_server(api, body)
    assert api.post("/servers/api-move/test").json()["host_key"] == a.host_key  # pinned
    assert api.get("/servers/api-move").json()["host_key"] == a.host_key
    record = {k: v for k, v in body.items() if k not in ("name", "private_key")}
    # Not moved (same host and port, no key given): the pinned key stays
    kept = api.put("/servers/api-move", json={**record, "tags": ["kept"]})
    assert kept.status_code == 200, kept.text
    assert kept.json()["host_key"] == a.host_key and kept.json()["tags"] == ["kept"]
    # Moved to the other server's port, with the credential again
    moved = api.put("/servers/api-move", json={**record, "port": b.port,
                                               "private_key": ssh_client_key.private})
    assert moved.status_code == 200, moved.text
    assert moved.json()["port"] == b.port and moved.json()["host_key"] is None
    assert api.get("/servers/api-move").json()["host_key"] is None
    tested = api.post("/servers/api-move/test").json()
    assert tested["ok"] is True, tested  # a's key kept would be a host key mismatch here
    assert tested["host_key"] == b.host_key
    assert api.get("/servers/api-move").json()["host_key"] == b.host_key
    # Moved back under the strict policy with no key given: nothing pinned is trusted
    back = api.put("/servers/api-move", json={**record, "host_key_policy": "strict",
                                              "private_key": ssh_client_key.private})
    assert back.status_code == 200 and back.json()["host_key"] is None, back.text
    assert api.post("/servers/api-move/test").json()["reason"] == "host_key_unknown"
    assert api.delete("/servers/api-move").status_code == 204
