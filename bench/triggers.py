"""Trigger latency and webhook burst on the real stack, against Prefect's own run_deployment.

Run by hand (not in CI):  .venv/bin/python bench/triggers.py [--reps 6] [--query 0.2]
                                                             [--rate 50] [--seconds 20]

Starts `flowforge up` in a temporary home on free 127.0.0.1 ports, with the worker polling
every `--query` seconds (FLOWFORGE_WORKER_QUERY_SECONDS -> PREFECT_WORKER_QUERY_SECONDS), and
measures, for a one-job workflow whose job is `true`:

* baseline: Prefect's `run_deployment(timeout=0)` -> flow run Running, and -> the job started;
* dependency: upstream run Completed (Prefect's end_time) -> downstream flow run Running / job
  started (a FlowForge dependency trigger = a Prefect automation with RunDeployment);
* webhook: signed `POST /hooks/{id}` sent -> flow run Running / job started;
* burst: `--rate` signed deliveries a second for `--seconds` s with distinct delivery ids, the
  work pool paused so the worker does not try to start a thousand processes; counts answers and
  the flow runs Prefect holds afterwards (none may be lost), then deletes them.

Times are Prefect's state timestamps and the job's `started_at` from the run summary, compared
with this process's clock (same machine). Prints one table; the median is what counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import BIN, _child_env, free_port, wait_http  # noqa: E402


def one_job(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "jobs": [{"name": "go", "runtime": "bash", "script": "true"}], **extra}


def ts(value: str | None) -> float:
    assert value, "missing timestamp"
    return datetime.fromisoformat(value).timestamp()


def wait_done(api: httpx.Client, run_id: str, timeout: float = 120,
              poll: float = 0.2) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = api.get(f"/runs/{run_id}").json()
        if body.get("state") in ("COMPLETED", "FAILED", "CANCELLED"):  # a new run may 404
            return body
        time.sleep(poll)
    raise TimeoutError(run_id)


def new_run(api: httpx.Client, name: str, seen: set[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in api.get(f"/workflows/{name}/runs").json():
            if run["id"] not in seen:
                seen.add(run["id"])
                return str(run["id"])
        time.sleep(0.1)
    raise TimeoutError(f"no new run of {name}")


PHASES = ("run created", "worker picked up (Pending)", "flow Running", "job start")


def latencies(client: Any, body: dict[str, Any], t0: float) -> list[float]:
    """t0 -> each of PHASES, from Prefect's own timestamps and the run summary.

    Split up because the last two steps are the process worker spawning a Python process for
    the flow run (~3 s here), which no trigger mechanism can shorten; the first two are what
    the trigger path and the worker's polling decide.
    """
    run_id = uuid.UUID(body["id"])
    created = client.read_flow_run(run_id).created.timestamp()
    pending = min(s.timestamp.timestamp() for s in client.read_flow_run_states(run_id)
                  if s.type.value == "PENDING")
    return [created - t0, pending - t0, ts(body["started_at"]) - t0,
            ts(body["jobs"][0]["started_at"]) - t0]


def record(results: dict[str, list[float]], label: str, values: list[float]) -> None:
    for phase, value in zip(PHASES, values, strict=True):
        results.setdefault(f"{label} -> {phase}", []).append(value)


def signed(secret: str, body: bytes, delivery: str) -> dict[str, str]:
    """The headers of a FlowForge-signed delivery: HMAC-SHA256 of "{ts}.{delivery}.{body}"."""
    stamp = str(int(time.time()))
    mac = hmac.new(secret.encode(), f"{stamp}.{delivery}.".encode() + body, hashlib.sha256)
    return {"X-FlowForge-Signature": "sha256=" + mac.hexdigest(),
            "X-FlowForge-Timestamp": stamp, "X-FlowForge-Delivery": delivery,
            "Content-Type": "application/json"}


async def burst(url: str, secret: str, rate: int,
                seconds: int) -> tuple[int, int, list[str], list[int]]:
    body = b'{"burst": true}'
    ok, bad, ids, retried = 0, 0, [], []
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
        async def one(i: int) -> None:
            nonlocal ok, bad
            h = signed(secret, body, f"burst-{i}")
            for attempt in range(3):  # a sender's retry: the delivery id keeps it one run
                if attempt:
                    retried.append(i)
                try:
                    r = await client.post(url, content=body, headers=h)
                except httpx.HTTPError:
                    continue
                if r.status_code == 202:
                    ok += 1
                    ids.append(r.json()["run_id"] or "queued")
                    return
            bad += 1
        tasks = []
        start = time.monotonic()
        for i in range(rate * seconds):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return ok, bad, ids, retried


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--query", type=float, default=0.2)
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--only", choices=["latency", "burst"], default=None)
    parser.add_argument("--prefect-postgres", action="store_true",
                        help="run the Prefect server on a private PostgreSQL instead of SQLite")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        home = Path(tmp)
        extra = {"FLOWFORGE_WORKER_QUERY_SECONDS": str(args.query)}
        if args.prefect_postgres:
            from tests.fixtures.postgres import start_postgres

            pg = stack.enter_context(start_postgres(home / "pg"))
            extra["FLOWFORGE_PREFECT_DATABASE_URL"] = pg.url
        api_port, prefect_port = free_port(), free_port()
        log = home / "up.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(BIN / "flowforge"), "up", "--home", str(home),
                 "--api-port", str(api_port), "--prefect-port", str(prefect_port)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env=_child_env(**extra))
        api_url = f"http://127.0.0.1:{api_port}"
        prefect_url = f"http://127.0.0.1:{prefect_port}/api"
        try:
            wait_http(f"{api_url}/healthz", 180, proc, log)
            run_bench(api_url, prefect_url, home, args)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def read_all(client: Any, deployment: str) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    runs: list[Any] = []
    while True:
        page = client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[uuid.UUID(deployment)])), limit=200, offset=len(runs))
        runs += page
        if len(page) < 200:
            return runs


def run_bench(api_url: str, prefect_url: str, home: Path, args: argparse.Namespace) -> None:
    # Before Prefect is imported (flowforge.controlplane imports it): it reads them once. Both
    # servers are closed: the API takes the admin key `up` wrote, Prefect its basic-auth
    # string (controlplane.settings' ADMIN_KEY_FILE and PREFECT_AUTH_FILE).
    os.environ["PREFECT_API_URL"] = prefect_url
    os.environ["PREFECT_API_AUTH_STRING"] = (home / "prefect-auth").read_text().strip()
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolUpdate
    from prefect.deployments import run_deployment

    results: dict[str, list[float]] = {}
    key = (home / "admin.key").read_text().strip()
    api = httpx.Client(base_url=api_url, timeout=60, headers={"Authorization": f"Bearer {key}"})
    for doc in (one_job("bench-up"), one_job("bench-base"), one_job("bench-hook"),
                one_job("bench-down", triggers=[{"type": "dependency", "upstream": ["bench-up"]}])):
        r = api.post("/workflows", json=doc)
        assert r.status_code == 201 and r.json()["sync"]["status"] == "synced", r.text
    hook = api.post("/workflows/bench-hook/triggers", json={"type": "webhook"}).json()

    seen_down: set[str] = set()
    client = SyncPrefectClient(prefect_url, auth_string=os.environ["PREFECT_API_AUTH_STRING"])
    client.__enter__()
    for _ in range(0 if args.only == "burst" else args.reps):
        # baseline: Prefect's own run_deployment
        t0 = time.time()
        flow_run: Any = run_deployment("bench-base/bench-base", timeout=0)
        record(results, "run_deployment", latencies(client, wait_done(api, str(flow_run.id)), t0))
        # dependency: upstream Completed -> downstream
        up = api.post("/workflows/bench-up/runs", json={"inputs": {}}).json()["run_id"]
        up_body = wait_done(api, up)
        down = wait_done(api, new_run(api, "bench-down", seen_down))
        record(results, "upstream Completed", latencies(client, down, ts(up_body["ended_at"])))
        # webhook: POST -> job start
        body = b"{}"
        t0 = time.time()
        r = api.post(hook["url"], content=body,
                     headers=signed(hook["secret"], body, str(uuid.uuid4())))
        assert r.status_code == 202, r.text
        results.setdefault("webhook POST -> 202 answer", []).append(time.time() - t0)
        record(results, "webhook POST", latencies(client, wait_done(api, r.json()["run_id"]), t0))
    client.__exit__(None, None, None)

    if results:
        print(f"\nworker query interval {args.query} s, {args.reps} reps")
        print(f"| {'what':56} | median | min | max |")
        print(f"|{'-' * 58}|--------|-----|-----|")
    for what, values in results.items():
        print(f"| {what:56} | {statistics.median(values):.2f} s | {min(values):.2f} | "
              f"{max(values):.2f} |")

    if args.only == "latency":
        return
    deployment = api.get("/workflows/bench-hook").json()["sync"]["deployment_id"]
    with SyncPrefectClient(prefect_url, auth_string=os.environ["PREFECT_API_AUTH_STRING"]) as client:
        client.update_work_pool("flowforge-process", WorkPoolUpdate(is_paused=True))
        try:
            start = time.monotonic()
            ok, bad, ids, retried = asyncio.run(burst(f"{api_url}{hook['url']}", hook["secret"],
                                             args.rate, args.seconds))
            took = time.monotonic() - start
            runs = read_all(client, deployment)
            prefix = f"webhook:{hook['id']}:burst-"
            keys = {fr.idempotency_key for fr in runs if (fr.idempotency_key or "").startswith(prefix)}
            queued = ids.count("queued")
            print(f"\nburst: {args.rate}/s for {args.seconds} s = {args.rate * args.seconds} "
                  f"deliveries sent in {took:.1f} s: {ok} answered 202 ({ok - queued} with their run, "
                  f"{queued} queued; {len(retried)} sender retries), {bad} failed; "
                  f"{len(keys)} burst runs in Prefect at once")
            # Queued deliveries get their runs from the API's dispatcher: wait for all of them.
            waited = time.monotonic()
            while len(keys) < ok and time.monotonic() - waited < 900:
                time.sleep(2)
                runs = read_all(client, deployment)
                keys = {fr.idempotency_key for fr in runs
                        if (fr.idempotency_key or "").startswith(prefix)}
            print(f"after {time.monotonic() - waited:.0f} s more: {len(keys)} distinct burst runs "
                  f"in Prefect, {ok - len(keys)} deliveries without a run")
            for fr in runs:
                if (fr.idempotency_key or "").startswith(f"webhook:{hook['id']}:burst-"):
                    client.delete_flow_run(fr.id)
        finally:
            client.update_work_pool("flowforge-process", WorkPoolUpdate(is_paused=False))


if __name__ == "__main__":
    main()
