"""Warm starts: FlowForge's warm runner against Prefect's own process worker, same server, one run.

Run by hand (not in CI):  .venv/bin/python bench/warm_start.py [--reps 10] [--burst 100]
                                                               [--only latency|chain|etl|burst]

Starts one `flowforge up` (its default pool `flowforge-process` served by the warm runner) in
a temporary home, then creates a second process pool `bench-plain` on the same Prefect server
and starts Prefect's own `prefect worker start --type process` on it, with the environment
`up` gives its workers (same poll interval, heartbeats, credentials). Every FlowForge workflow
is defined twice, once per pool (`settings.work_pool`), so the two differ only in what starts
the flow run. Measured, medians of --reps, the two variants alternating:

* latency: `POST /workflows/{name}/runs` answered -> the first job started (the run
  summary's `started_at`), one-job workflow (`true`), warm and plain; and the phases on the
  way (Prefect's Pending and Running state timestamps);
* dependency: upstream run's end -> downstream's first job started (a dependency trigger);
* webhook: signed `POST /hooks/{id}` answered -> first job started;
* chain: Windmill's orchestration benchmark, 40 one-line bash jobs each needing the one before,
  `POST .../runs` -> run ended, warm; against the same 40 tasks as a hand-written Prefect flow
  deployed on the plain pool (`run_deployment` called -> flow run's end time);
* etl: the seed ETL through the API on the plain pool against the same flow hand-written
  (bench/etl.py's) and deployed on that pool, `POST`/`run_deployment` -> end;
* burst: --burst runs of the one-job workflow requested at once, until all have ended:
  runs per second, warm against plain, and how many did not complete.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import triggers  # noqa: E402
from bench.triggers import signed, ts  # noqa: E402
from tests.conftest import Stack, start_stack, stop_process  # noqa: E402

PLAIN = "bench-plain"

# bench/etl.py's hand-written ETL and a 40-task chain, as a file a deployment can load.
HANDWRITTEN = '''
import json, subprocess, sys
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

EXTRACT = "import json, time; time.sleep(1); print(json.dumps({'rows': %d}))"
JOIN = "import json, sys, time; time.sleep(0.5); print(sum(json.loads(sys.argv[1])))"


@task(cache_policy=NO_CACHE, persist_result=False)
def step() -> None:
    subprocess.run(["bash", "-c", "true"], check=True)


@flow(persist_result=False)
def hand_chain40() -> None:
    for i in range(40):
        step.with_options(name=f"step{i}")()


@task(cache_policy=NO_CACHE, persist_result=False)
def extract(rows: int) -> int:
    out = subprocess.run([sys.executable, "-c", EXTRACT % rows], capture_output=True,
                         text=True, check=True)
    return int(json.loads(out.stdout)["rows"])


@task(cache_policy=NO_CACHE, persist_result=False)
def join(counts: list[int]) -> int:
    out = subprocess.run([sys.executable, "-c", JOIN, json.dumps(counts)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


@flow(task_runner=ThreadPoolTaskRunner(max_workers=5), persist_result=False)
def hand_etl() -> int:
    futures = [extract.with_options(name=f"extract_{n}").submit(r)
               for n, r in (("customers", 1200), ("orders", 5400), ("products", 310))]
    return join.submit(futures).result()
'''


def one_job(name: str, pool: str | None = None, **extra: Any) -> dict[str, Any]:
    settings = {"work_pool": pool} if pool else {}
    return {"name": name, "settings": settings,
            "jobs": [{"name": "go", "runtime": "bash", "script": "true"}], **extra}


def chain(name: str, n: int = 40) -> dict[str, Any]:
    jobs = [{"name": f"s{i:02d}", "runtime": "bash", "script": "true",
             **({"needs": [f"s{i - 1:02d}"]} if i else {})} for i in range(n)]
    return {"name": name, "jobs": jobs}


def etl(name: str, pool: str) -> dict[str, Any]:
    from bench.etl import etl_workflow

    doc = etl_workflow()
    doc["name"] = name
    doc["settings"] = {**doc.get("settings", {}), "work_pool": pool}
    return doc


def wait_done(api: httpx.Client, run_id: str, timeout: float = 300) -> dict[str, Any]:
    return triggers.wait_done(api, run_id, timeout, poll=0.05)


def start(api: httpx.Client, name: str) -> tuple[str, float]:
    r = api.post(f"/workflows/{name}/runs", json={})
    answered = time.time()
    assert r.status_code == 201, r.text
    return str(r.json()["run_id"]), answered


def phases(prefect: Any, body: dict[str, Any], t0: float) -> dict[str, float]:
    states = {s.type.value: s.timestamp.timestamp()
              for s in prefect.read_flow_run_states(uuid.UUID(body["id"]))}
    return {"-> Pending": states["PENDING"] - t0, "-> Running": states["RUNNING"] - t0,
            "-> first job started": ts(body["jobs"][0]["started_at"]) - t0,
            "-> run ended": ts(body["ended_at"]) - t0}


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f})"


class Bench:
    def __init__(self, stack: Stack, api: httpx.Client, prefect: Any, reps: int) -> None:
        self.stack, self.api, self.prefect, self.reps = stack, api, prefect, reps
        self.rows: list[tuple[str, str, str, str]] = []
        self.hand_started: dict[str, list[float]] = {}
        self.refused = 0

    def row(self, what: str, ours: list[float], theirs: list[float] | None, bar: str) -> None:
        ratio = (f"{statistics.median(ours) / statistics.median(theirs):.2f}"
                 if theirs else "-")
        self.rows.append((what, median(ours), median(theirs) if theirs else "-", ratio + " | " + bar))

    def latency(self) -> None:
        warm: dict[str, list[float]] = {}
        plain: dict[str, list[float]] = {}
        for _ in range(self.reps):
            for name, into in (("one", warm), ("one-plain", plain)):
                run_id, t0 = start(self.api, name)
                for k, v in phases(self.prefect, wait_done(self.api, run_id), t0).items():
                    into.setdefault(k, []).append(v)
                time.sleep(0.5)
        for k in warm:
            self.row(f"one-job run: POST answered {k}", warm[k], plain[k],
                     "<= 0.5 s and <= 0.25x" if k == "-> first job started" else "")

    def dependency_and_webhook(self) -> None:
        down: list[float] = []
        hook_lat: list[float] = []
        hook = self.api.post("/workflows/one-hook/triggers", json={"type": "webhook"}).json()
        seen: set[str] = set()
        hooked: set[str] = set()
        for _ in range(self.reps):
            up_id, _ = start(self.api, "one-up")
            up = wait_done(self.api, up_id)
            run = self._new_run("one-down", seen)
            down.append(ts(wait_done(self.api, run)["jobs"][0]["started_at"]) - ts(up["ended_at"]))
            body = b"{}"
            r = self.api.post(hook["url"], content=body,
                              headers=signed(hook["secret"], body, str(uuid.uuid4())))
            t0 = time.time()
            assert r.status_code == 202, r.text
            # Queued deliveries (Prefect busy) answer without a run id; the dispatcher makes it.
            done = wait_done(self.api, r.json()["run_id"] or self._new_run("one-hook", hooked))
            hook_lat.append(ts(done["jobs"][0]["started_at"]) - t0)
            time.sleep(0.5)
        self.row("dependency: upstream ended -> downstream first job started", down, None,
                 "<= 1.0 s")
        self.row("webhook answered -> first job started", hook_lat, None, "<= 0.5 s")

    def _new_run(self, name: str, seen: set[str], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.api.get(f"/workflows/{name}/runs").json():
                if run["id"] not in seen:
                    seen.add(run["id"])
                    return str(run["id"])
            time.sleep(0.05)
        raise TimeoutError(name)

    def handwritten(self, entry: str) -> float:
        from prefect.deployments import run_deployment

        t0 = time.time()
        flow_run: Any = run_deployment(f"{entry}/{entry}", timeout=0)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            fr = self.prefect.read_flow_run(flow_run.id)
            if fr.state and fr.state.is_final():
                assert fr.state.is_completed(), fr.state
                assert fr.work_pool_name == PLAIN, fr.work_pool_name
                self.hand_started.setdefault(entry, []).append(
                    fr.start_time.timestamp() - t0)
                return float(fr.end_time.timestamp() - t0)
            time.sleep(0.05)
        raise TimeoutError(entry)

    def ours_to_end(self, name: str) -> float:
        t0 = time.time()  # from the request, as `handwritten` times from the call
        run_id, _ = start(self.api, name)
        body = wait_done(self.api, run_id)
        assert body["state"] == "COMPLETED", body
        return ts(body["ended_at"]) - t0

    def chain(self) -> None:
        ours, theirs = self.pair(lambda: self.ours_to_end("chain40"),
                                 lambda: self.handwritten("hand-chain40"))
        self.row("chain of 40 jobs: request -> run ended (hand-written on the plain pool)",
                 ours, theirs, "<= 1.2 s and <= 0.4x")
        self.rows.append(("  hand-written chain: request -> flow run Running", "",
                          median(self.hand_started["hand-chain40"]), ""))

    def etl(self) -> None:
        ours, theirs = self.pair(lambda: self.ours_to_end("etl-plain"),
                                 lambda: self.handwritten("hand-etl"))
        self.row("seed ETL on the plain pool: request -> run ended (hand-written, same pool)",
                 ours, theirs, "<= 1.05x")

    def pair(self, ours: Callable[[], float],
             theirs: Callable[[], float]) -> tuple[list[float], list[float]]:
        a, b = [], []
        for _ in range(self.reps):
            a.append(ours())
            b.append(theirs())
        return a, b

    def burst(self, n: int) -> None:
        rates: dict[str, float] = {}
        for name in ("one", "one-plain"):
            self.refused = 0
            t0 = time.time()
            ids = asyncio.run(self._start_many(name, n))
            bodies = [wait_done(self.api, i, timeout=1800) for i in ids]
            took = max(ts(b["ended_at"]) for b in bodies if b["ended_at"]) - t0
            failed = sum(b["state"] != "COMPLETED" for b in bodies)
            rates[name] = n / took
            self.rows.append((f"{n} runs at once ({'warm' if name == 'one' else 'plain'}): "
                              f"runs/s, not completed, requests answered 503 and resent",
                              f"{n / took:.2f} runs/s, {failed}, {self.refused}",
                              f"{took:.1f} s", ""))
        self.rows.append((f"{n} runs at once: throughput warm / plain",
                          f"{rates['one'] / rates['one-plain']:.2f}", "", ">= 3x"))

    async def _start_many(self, name: str, n: int) -> list[str]:
        """`n` requests at once; one answered 503 (Prefect busy) is sent again with the same
        Idempotency-Key, as a client would, so it is still one run."""
        headers = {"Authorization": f"Bearer {self.stack.admin_key}"}
        async with httpx.AsyncClient(base_url=self.stack.api_url, headers=headers,
                                     timeout=300) as client:
            async def one(i: int) -> str:
                key = {"Idempotency-Key": f"{name}-{uuid.uuid4()}"}
                for _ in range(5):
                    r = await client.post(f"/workflows/{name}/runs", json={}, headers=key)
                    if r.status_code == 201:
                        return str(r.json()["run_id"])
                    self.refused += 1
                    await asyncio.sleep(1)
                raise AssertionError(r.text)

            return list(await asyncio.gather(*(one(i) for i in range(n))))


def deploy_handwritten(prefect: Any, project: Path) -> None:
    """The hand-written flows as a Prefect user deploys them: a file, a deployment on the
    plain pool whose pull step is the directory it is in."""
    from prefect.client.schemas.actions import DeploymentCreate  # noqa: F401 (the client's)

    (project / "handwritten.py").write_text(HANDWRITTEN)
    for entry in ("hand-chain40", "hand-etl"):  # not a FlowForge workflow's name
        flow_id = prefect.create_flow_from_name(entry)
        prefect.create_deployment(
            flow_id=flow_id, name=entry, work_pool_name=PLAIN,
            entrypoint=f"handwritten.py:{entry.replace('-', '_')}", path=str(project),
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {
                "directory": str(project)}}])


def plain_worker(stack: Stack, project: Path) -> subprocess.Popen[bytes]:
    from flowforge.stack.settings import StackSettings
    from flowforge.stack.workers import worker_argv, worker_env

    settings = StackSettings(home=stack.home, worker_query_seconds=1.0)
    env = worker_env(settings, stack.prefect_url, stack.home / "prefect", stack.prefect_auth)
    log = (stack.home / "logs" / "plain-worker.log").open("wb")
    return subprocess.Popen(worker_argv(PLAIN, "process", runner="process"), env=env,
                            cwd=project, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--only", choices=["latency", "chain", "etl", "burst"], default=None)
    args = parser.parse_args()
    env = {"FLOWFORGE_WORKER_QUERY_SECONDS": "1.0",  # FlowForge's default, for both pools
           "FLOWFORGE_RATE_LIMIT_RUNS": "1000000/minute",
           "FLOWFORGE_RATE_LIMIT_HOOKS": "1000000/minute"}
    with tempfile.TemporaryDirectory() as tmp, start_stack(Path(tmp), **env) as stack:
        import os

        os.environ.update(stack.prefect_env())
        from prefect.client.orchestration import get_client

        from flowforge.stack.workers import ensure_work_pool

        ensure_work_pool(stack.prefect_url, PLAIN, auth=stack.prefect_auth)
        handmade = Path(tmp) / "handwritten"
        handmade.mkdir()
        worker = plain_worker(stack, handmade)
        try:
            with stack.client() as api, get_client(sync_client=True) as prefect:
                deploy_handwritten(prefect, handmade)
                for doc in (one_job("one"), one_job("one-plain", PLAIN), one_job("one-up"),
                            one_job("one-hook"), chain("chain40"), etl("etl-plain", PLAIN),
                            one_job("one-down", triggers=[{"type": "dependency",
                                                           "upstream": ["one-up"]}])):
                    r = api.post("/workflows", json=doc)
                    assert r.status_code == 201 and r.json()["sync"]["status"] == "synced", r.text
                time.sleep(3)  # both workers online and polling
                bench = Bench(stack, api, prefect, args.reps)
                for part in ("latency", "chain", "etl", "burst"):
                    if args.only in (None, part):
                        if part == "latency":
                            bench.latency()
                            report(bench, args.reps)
                            bench.dependency_and_webhook()
                        elif part == "burst":
                            bench.burst(args.burst)
                        else:
                            getattr(bench, part)()
                        report(bench, args.reps)
        finally:
            stop_process(worker)


def report(bench: Bench, reps: int) -> None:
    print(f"\n{datetime.now():%Y-%m-%d %H:%M}, {reps} reps; warm = FlowForge's runner, "
          "plain = Prefect's process worker, same Prefect server")
    print("| what | FlowForge (warm unless noted) | plain / hand-written | ratio | bar |")
    print("|---|---|---|---|---|")
    for what, ours, theirs, rest in bench.rows:
        print(f"| {what} | {ours} | {theirs} | {rest} |", flush=True)


if __name__ == "__main__":
    main()
