"""The trigger API's own rules, with Prefect unreachable: validation, ids, secrets, 401/413/409.

None of these need Prefect: they are decided before anything is sent to it (a definition is
stored and marked `pending` when Prefect is down), so they are tested fast, in-process, on SQLite.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.services.signatures import sign
from api.settings import ApiSettings as Settings
from tests.conftest import with_admin_key

JOBS = [{"name": "a", "runtime": "bash", "script": "true"}]


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "0")  # fail fast on the dead port
    settings = Settings(home=tmp_path, prefect_api_url=f"http://127.0.0.1:{dead_port()}/api",
                        prefect_timeout=1, sync_interval=3600, webhook_answer_seconds=0.5)
    with TestClient(create_app(settings)) as client:
        yield with_admin_key(client, tmp_path)


def wf(name: str, *triggers: dict[str, object]) -> dict[str, object]:
    return {"name": name, "jobs": JOBS, "triggers": list(triggers)}


def test_ids_are_assigned_and_kept_across_a_replace(api: TestClient) -> None:
    created = api.post("/workflows", json=wf("w", {"type": "schedule", "cron": "0 2 * * *"}))
    assert created.status_code == 201, created.text
    assert created.json()["sync"]["status"] == "pending"  # Prefect is down: stored anyway
    (trigger,) = created.json()["spec"]["triggers"]
    assert trigger["id"] and trigger["name"] == "schedule-1"
    again = api.put("/workflows/w", json=wf("w", {"type": "schedule", "cron": "0 2 * * *"},
                                             {"type": "webhook"}))
    assert again.status_code == 200, again.text
    ids = [t["id"] for t in again.json()["spec"]["triggers"]]
    assert ids[0] == trigger["id"] and ids[1] != trigger["id"]
    listed = api.get("/workflows/w/triggers").json()
    assert [t["type"] for t in listed] == ["schedule", "webhook"]
    assert listed[1]["url"] == f"/hooks/{ids[1]}" and listed[1]["secret_set"] is False
    one = api.get(f"/workflows/w/triggers/{ids[0]}").json()
    assert len(one["next_runs"]) == 5


def test_bad_trigger_fields_are_422_naming_them(api: TestClient) -> None:
    api.post("/workflows", json=wf("w"))
    bad = api.post("/workflows/w/triggers", json={"type": "schedule", "cron": "* * *"})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "triggers[0].cron"
    unknown = api.post("/workflows/w/triggers", json={"type": "dependency", "upstream": ["nope"]})
    assert unknown.status_code == 422 and "unknown upstream workflow 'nope'" in unknown.text
    assert api.get("/workflows/w/triggers").json() == []  # nothing half-written
    wrong = api.patch("/workflows/w/triggers/missing", json={"enabled": False})
    assert wrong.status_code == 404


def test_cycles_and_dependants(api: TestClient) -> None:
    api.post("/workflows", json=wf("a"))
    api.post("/workflows", json=wf("b", {"type": "dependency", "upstream": ["a"]}))
    api.post("/workflows", json=wf("c", {"type": "dependency", "upstream": ["b"]}))
    loop = api.post("/workflows/a/triggers", json={"type": "dependency", "upstream": ["c"]})
    assert loop.status_code == 422
    assert "a -> c -> b -> a" in loop.json()["error"]["message"]
    self_loop = api.put("/workflows/a", json=wf("a", {"type": "dependency", "upstream": ["a"]}))
    assert self_loop.status_code == 422 and "a -> a" in self_loop.text
    refused = api.delete("/workflows/a")
    assert refused.status_code == 409
    assert refused.json()["error"]["details"]["dependants"] == ["b"]
    assert api.delete("/workflows/b").status_code == 409  # c depends on b


def test_webhook_secret_shown_once_and_checked_first(api: TestClient, tmp_path: Path) -> None:
    api.post("/workflows", json=wf("w"))
    made = api.post("/workflows/w/triggers", json={"type": "webhook"})
    assert made.status_code == 201, made.text
    hook = made.json()
    assert hook["secret"].startswith("whsec_")
    assert api.get(f"/workflows/w/triggers/{hook['id']}").json()["secret"] is None
    assert hook["secret"] not in (tmp_path / "flowforge.db").read_bytes().decode("latin-1")
    body = b'{"x": 1}'
    assert api.post(hook["url"], content=body).status_code == 401
    wrong = api.post(hook["url"], content=body, headers={"X-FlowForge-Signature": "sha256=ab"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "bad_signature"
    big = b"x" * (1024 * 1024 + 1)
    signed_big = sign(hook["secret"], big, "d-big")
    assert api.post(hook["url"], content=big, headers=signed_big).status_code == 413
    # Signed correctly, Prefect down: stored and queued, not lost; a replay finds the same one.
    headers = sign(hook["secret"], body, "d-1")
    good = headers["X-FlowForge-Signature"]
    for _ in range(2):
        queued = api.post(hook["url"], content=body, headers=headers)
        assert queued.status_code == 202, queued.text
        assert queued.json()["status"] == "queued" and queued.json()["run_id"] is None
    db = sqlite3.connect(tmp_path / "flowforge.db")
    rows = db.execute("SELECT delivery_id, run_id, attempts, last_error "
                      "FROM webhook_deliveries").fetchall()
    assert len(rows) == 1 and rows[0][:2] == ("d-1", None)
    assert rows[0][2] >= 1 and "not deployed" in rows[0][3]
    # The delivery id is signed: the same signature under another id is refused.
    assert api.post(hook["url"], content=body,
                    headers={**headers, "X-FlowForge-Delivery": "d-2"}).status_code == 401
    rotated = api.post(f"/workflows/w/triggers/{hook['id']}/secret",
                       json={"keep_previous_seconds": 0}).json()["secret"]
    assert rotated != hook["secret"]
    assert api.post(hook["url"], content=body, headers=headers).status_code == 401
    api.patch(f"/workflows/w/triggers/{hook['id']}", json={"enabled": False})
    assert api.post(hook["url"], content=body, headers=headers).status_code == 404
    assert good not in (tmp_path / "flowforge.db").read_bytes().decode("latin-1")
    assert api.post("/hooks/unknown", content=body).status_code == 404


def test_patch_cannot_change_type_and_delete_removes(api: TestClient) -> None:
    api.post("/workflows", json=wf("w", {"type": "schedule", "cron": "0 2 * * *", "name": "n"}))
    (t,) = api.get("/workflows/w/triggers").json()
    assert api.patch(f"/workflows/w/triggers/{t['id']}", json={"type": "webhook"}).status_code == 422
    patched = api.patch(f"/workflows/w/triggers/{t['id']}", json={"cron": "5 4 * * *",
                                                                   "enabled": False})
    assert patched.status_code == 200 and patched.json()["config"]["cron"] == "5 4 * * *"
    assert patched.json()["id"] == t["id"]
    assert api.delete(f"/workflows/w/triggers/{t['id']}").status_code == 204
    assert api.get("/workflows/w/triggers").json() == []


def test_delete_while_prefect_is_down_is_accepted_and_says_prefect_is_pending(api: TestClient) -> None:
    """The workflow is gone from the API at once; the answer says its deployment and
    automations are not removed yet (the sync loop retries), instead of a 204 that would hide
    automations still able to fire."""
    assert api.post("/workflows", json=wf("gone", {"type": "event", "event": "x.y"})).status_code == 201
    deleted = api.delete("/workflows/gone")
    assert deleted.status_code == 202, deleted.text
    body = deleted.json()
    assert body["name"] == "gone" and body["sync"]["status"] == "pending"
    assert "unreachable" in body["sync"]["error"] and "retried" in body["detail"]
    assert api.get("/workflows/gone").status_code == 404
    assert "gone" not in [w["name"] for w in api.get("/workflows").json()]
    assert api.post("/workflows", json=wf("gone")).status_code == 201  # the name is free again


def _mac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _github(secret: str, body: bytes, now: int) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + _mac(secret, body),
            "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958", "X-GitHub-Event": "push"}


def _stripe(secret: str, body: bytes, now: int) -> dict[str, str]:
    return {"Stripe-Signature": f"t={now},v1={_mac(secret, f'{now}.'.encode() + body)}"}


def _slack(secret: str, body: bytes, now: int) -> dict[str, str]:
    return {"X-Slack-Request-Timestamp": str(now),
            "X-Slack-Signature": "v0=" + _mac(secret, f"v0:{now}:".encode() + body)}


PRESET_BODY = json.dumps({"id": "evt_1NG8Du2eZvKYlo2C", "event_id": "Ev08MFMKH6",
                          "ref": "refs/heads/main"}).encode()


@pytest.mark.parametrize(("scheme", "signer", "delivery", "stale"), [
    ("github", _github, "github-" + hashlib.sha256(PRESET_BODY).hexdigest(), False),
    ("stripe", _stripe, "evt_1NG8Du2eZvKYlo2C", True),
    ("slack", _slack, "Ev08MFMKH6", True),
])
def test_a_preset_webhook_takes_its_senders_signature_and_refuses_a_bad_one(
        api: TestClient, tmp_path: Path, scheme: str,
        signer: Callable[[str, bytes, int], dict[str, str]], delivery: str,
        stale: bool) -> None:
    """`verify: github | stripe | slack`: the sender's own headers, signed with the signing
    secret the sender made (set through the rotation route), through POST /hooks/{id}."""
    made = api.post("/workflows", json=wf("w", {"type": "webhook", "verify": scheme}))
    assert made.status_code == 201, made.text
    (trigger,) = made.json()["spec"]["triggers"]
    assert trigger["verify"] == scheme
    url = f"/hooks/{trigger['id']}"
    secret = f"{scheme}-signing-secret-0123"
    now = int(time.time())
    good = signer(secret, PRESET_BODY, now)
    # No secret yet: nothing verifies
    assert api.post(url, content=PRESET_BODY, headers=good).status_code == 401
    set_ = api.post(f"/workflows/w/triggers/{trigger['id']}/secret", json={"secret": secret})
    assert set_.status_code == 200 and set_.json()["secret"] is None  # the sender's: not echoed
    refused = {
        "another secret": signer("another-secret-0123456", PRESET_BODY, now),
        "another body": signer(secret, PRESET_BODY + b" ", now),
        "unsigned": {},
        "flowforge's scheme": sign(secret, PRESET_BODY, "d-1"),
        **({"stale": signer(secret, PRESET_BODY, now - 600)} if stale else {}),
    }
    for case, headers in refused.items():
        answer = api.post(url, content=PRESET_BODY, headers=headers)
        assert answer.status_code == 401, (case, answer.text)
        assert answer.json()["error"]["code"] == "bad_signature", case
    db = sqlite3.connect(tmp_path / "flowforge.db")
    assert db.execute("SELECT count(*) FROM webhook_deliveries").fetchone() == (0,)
    for _ in range(2):  # a replay is the same delivery
        accepted = api.post(url, content=PRESET_BODY, headers=good)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["delivery_id"] == delivery
        assert accepted.json()["status"] == "queued"  # Prefect is down: stored, not lost
    assert db.execute("SELECT trigger_id, delivery_id FROM webhook_deliveries").fetchall() == [
        (trigger["id"], delivery)]
