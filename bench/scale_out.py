"""Throughput of the scale-out topology against one `flowforge up`, side by side in one run.

Run by hand (not in CI):  .venv/bin/python bench/scale_out.py [--runs 500] [--rate 20]
                                                              [--hooks 1000] [--hook-rate 50]

Starts, one after the other on free 127.0.0.1 ports:

Each worker runs at most `--limit` flow runs at once (a process each).

* single: `flowforge up` on its defaults (SQLite for both databases, one Prefect server with
  its services, one worker, one API);
* topology: PostgreSQL and Redis (Debian's servers, started here), `--prefect-api-replicas 2
  --api-replicas 2 --workers 2`.

On each: `--runs` one-job runs (`true`) started at `--rate` a second (through the APIs in
turn), all waited for; throughput = runs / (last run's end - first request). Then a webhook
burst: `--hooks` signed deliveries at `--hook-rate` a second (through the APIs in turn), the
work pool paused so no worker starts them; the time from the last delivery until Prefect holds
every run. None may be lost in either. Prints one table with the topology ÷ single ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.triggers import signed  # noqa: E402
from tests.conftest import Stack, free_port, start_stack  # noqa: E402
from tests.fixtures.postgres import find_bindir, start_postgres  # noqa: E402


def _next_port(url: str, offset: int) -> str:
    base, _, port = url.rpartition(":")
    return f"{base}:{int(port) + offset}"


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server not installed (scripts/system-deps.sh)"
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(workdir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def clients(stack: Stack, replicas: int) -> list[httpx.Client]:
    return [httpx.Client(base_url=_next_port(stack.api_url, i), timeout=120, headers={
        "Authorization": f"Bearer {stack.admin_key}"}) for i in range(replicas)]


def throughput(apis: list[httpx.Client], runs: int, rate: float) -> tuple[float, int, float]:
    """(runs a second, runs lost, seconds in all) for `runs` one-job runs started at `rate`."""
    doc = {"name": "bench-one", "jobs": [{"name": "go", "runtime": "bash", "script": "true"}]}
    assert apis[0].post("/workflows", json=doc).status_code == 201
    start = time.monotonic()
    t0 = time.time()
    ids = []
    for i in range(runs):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        response = apis[i % len(apis)].post("/workflows/bench-one/runs", json={"inputs": {}})
        assert response.status_code == 201, response.text
        ids.append(response.json()["run_id"])
    ends, lost = [], 0
    deadline = time.monotonic() + 60 + runs * 5
    for run_id in ids:
        while True:
            body = apis[0].get(f"/runs/{run_id}").json()
            if body["state"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED"):
                break
            if time.monotonic() > deadline:
                body = {"state": "LOST"}
                break
            time.sleep(0.5)
        if body["state"] != "COMPLETED":
            lost += 1
            continue
        ends.append(datetime.fromisoformat(body["ended_at"]).timestamp())
    elapsed = max(ends) - t0
    return (runs - lost) / elapsed, lost, elapsed


async def _deliver(urls: list[str], secret: str, count: int, rate: float) -> int:
    body = b'{"burst": true}'
    answered = 0
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as client:
        async def one(i: int) -> None:
            nonlocal answered
            headers = signed(secret, body, f"burst-{i}")
            for _ in range(3):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.post(urls[i % len(urls)], content=body,
                                          headers=headers)).status_code == 202:
                        answered += 1
                        return
        start = time.monotonic()
        tasks = []
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return answered


def webhook_burst(stack: Stack, apis: list[httpx.Client], count: int,
                  rate: float) -> tuple[int, float]:
    """(deliveries answered 202, seconds from the last delivery until Prefect holds every run)."""
    doc = {"name": "bench-hook", "jobs": [{"name": "go", "runtime": "bash", "script": "true"}]}
    assert apis[0].post("/workflows", json=doc).status_code == 201
    hook = apis[0].post("/workflows/bench-hook/triggers", json={"type": "webhook"}).json()
    with stack.prefect_http() as prefect:
        prefect.patch("/work_pools/flowforge-process", json={"is_paused": True})
        deployment = prefect.get("/deployments/name/bench-hook/bench-hook").json()["id"]
        urls = [str(api.base_url).rstrip("/") + hook["url"] for api in apis]
        answered = asyncio.run(_deliver(urls, hook["secret"], count, rate))
        last = time.monotonic()
        while answered:
            held = prefect.post("/flow_runs/count", json={
                "deployments": {"id": {"any_": [deployment]}}}).json()
            if held >= answered or time.monotonic() - last > 900:
                break
            time.sleep(1)
        waited = time.monotonic() - last
        prefect.patch("/work_pools/flowforge-process", json={"is_paused": False})
    return answered, waited


def measure(stack: Stack, replicas: int, args: argparse.Namespace) -> dict[str, Any]:
    apis = clients(stack, replicas)
    row: dict[str, Any] = {}
    if args.only != "burst":
        per_second, lost, elapsed = throughput(apis, args.runs, args.rate)
        row.update({"runs/s": per_second, "lost": lost, "seconds": elapsed})
    if args.only != "runs":
        answered, waited = webhook_burst(stack, apis, args.hooks, args.hook_rate)
        row.update({"hooks answered": answered, "hooks -> all runs (s)": waited})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--hooks", type=int, default=1000)
    parser.add_argument("--hook-rate", type=float, default=50)
    parser.add_argument("--only", choices=["runs", "burst"], default=None)
    parser.add_argument("--limit", type=int, default=8,
                        help="flow runs a worker runs at once (FLOWFORGE_WORKER_LIMIT)")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "single").mkdir()
        # The rate limits are for people; a load test lifts them (both set-ups alike).
        limit = {"FLOWFORGE_WORKER_LIMIT": str(args.limit),
                 "FLOWFORGE_RATE_LIMIT_HOOKS": "1000000/minute",
                 "FLOWFORGE_RATE_LIMIT_RUNS": "1000000/minute"}
        with start_stack(base / "single", **limit) as stack:
            results["single"] = measure(stack, 1, args)
        (base / "topology").mkdir()
        (base / "redis").mkdir()
        bindir = find_bindir()
        assert bindir, "PostgreSQL not installed (scripts/system-deps.sh)"
        with start_postgres(base / "pg", bindir) as pg, redis_server(base / "redis") as redis:
            pg.create_database("prefect")
            with start_stack(base / "topology", "--prefect-api-replicas", "2", "--api-replicas",
                             "2", "--workers", "2", "--prefect-database-url",
                             pg.url_for("prefect"), "--database-url", pg.url,
                             "--redis-url", redis, span=2, **limit) as stack:
                results["topology"] = measure(stack, 2, args)
    print(f"\n{args.runs} one-job runs at {args.rate}/s; {args.hooks} webhook deliveries at "
          f"{args.hook_rate}/s (--only {args.only})")
    keys = list(results["single"])
    print("| | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.2f}" if isinstance(row[k], float)
                                         else str(row[k]) for k in keys) + " |")
    single, topo = results["single"], results["topology"]
    if "runs/s" in single:
        print(f"throughput ratio topology / single: {topo['runs/s'] / single['runs/s']:.2f}")
    if single.get("hooks -> all runs (s)"):
        print(f"webhook burst ratio topology / single: "
              f"{topo['hooks -> all runs (s)'] / single['hooks -> all runs (s)']:.2f}")


if __name__ == "__main__":
    main()
