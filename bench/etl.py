"""FlowForge vs a hand-written Prefect flow doing the same subprocess work, in one process.

Run by hand (not in CI):  .venv/bin/python bench/etl.py [--reps 5] [--fanout 500]

Two workloads, each as a FlowForge workflow (compiled, then called in-process like any Prefect
flow) and as the Prefect flow an expert would write by hand (sync tasks submitted to a
ThreadPoolTaskRunner of the same width, `wait_for` for the edges, subprocesses for the work):

* etl: three 1 s extracts in parallel, then a 0.5 s join that reads their outputs;
* fanout: one root, N-2 parallel no-op jobs, one sink (a 500-job DAG by default).

It starts its own Prefect server on a free port (unless PREFECT_API_URL is set), alternates the
two variants, and prints each wall time (median of --reps) and the ratio FlowForge / Prefect.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import runpy
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXTRACT = "import json, time; time.sleep(1); print(json.dumps({'rows': %d}))"
JOIN = "import json, sys, time; time.sleep(0.5); print(sum(json.loads(sys.argv[1])))"


def etl_workflow() -> dict[str, Any]:
    jobs: list[dict[str, Any]] = [
        {"name": f"extract_{n}", "runtime": "python",
         "script": f"import time, flowforge_helpers as ff\ntime.sleep(1)\nff.output({{'rows': {r}}})"}
        for n, r in (("customers", 1200), ("orders", 5400), ("products", 310))
    ]
    jobs.append({
        "name": "join", "runtime": "python",
        "needs": ["extract_customers", "extract_orders", "extract_products"],
        "script": "import time, flowforge_helpers as ff\ntime.sleep(0.5)\n"
                  "i = ff.input()['jobs']\nff.output({'total': sum(j['output']['rows'] for j in i.values())})",
    })
    return {"name": "bench-etl", "settings": {"max_parallel_jobs": 5}, "jobs": jobs,
            "outputs": {"total": "{{ jobs.join.output.total }}"}}


def fanout_workflow(n: int) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = [{"name": "root", "runtime": "bash", "script": "true"}]
    jobs += [{"name": f"mid{i:04d}", "runtime": "bash", "script": "true", "needs": ["root"]}
             for i in range(n - 2)]
    jobs.append({"name": "sink", "runtime": "bash", "script": "true",
                 "needs": [j["name"] for j in jobs[1:]]})
    return {"name": "bench-fanout", "settings": {"max_parallel_jobs": 10}, "jobs": jobs}


def flowforge_flow(doc: dict[str, Any], workdir: Path) -> Callable[[], Any]:
    from flowforge.controlplane.compiler import compile_workflow
    from flowforge.core.validation import load_workflow

    compiled = compile_workflow(load_workflow(doc))
    path = compiled.write(workdir / "flows")
    flow = runpy.run_path(str(path))[compiled.function]
    return lambda: asyncio.run(flow(return_state=True))


def prefect_etl() -> Callable[[], Any]:
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

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

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=5))
    async def hand_etl() -> int:
        futures = [extract.with_options(name=f"extract_{n}").submit(r)
                   for n, r in (("customers", 1200), ("orders", 5400), ("products", 310))]
        total = join.submit(futures)  # Prefect resolves the futures: data edges
        return total.result()

    return lambda: asyncio.run(hand_etl(return_state=True))


def prefect_fanout(n: int) -> Callable[[], Any]:
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    @task(cache_policy=NO_CACHE, persist_result=False)
    def noop() -> None:
        subprocess.run(["bash", "-c", "true"], check=True)

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=10))
    async def hand_fanout() -> None:
        root = noop.with_options(name="root").submit()
        mids = [noop.with_options(name=f"mid{i:04d}").submit(wait_for=[root])
                for i in range(n - 2)]
        noop.with_options(name="sink").submit(wait_for=mids).wait()

    return lambda: asyncio.run(hand_fanout(return_state=True))


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    state = fn()
    wall = time.perf_counter() - start
    if not state.is_completed():
        raise RuntimeError(f"benchmark run did not complete: {state}")
    return wall


def start_server(home: Path) -> subprocess.Popen[bytes]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
         "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    import httpx

    for _ in range(240):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("Prefect server did not start")


@contextmanager
def prefect_server(tmp: Path) -> Iterator[subprocess.Popen[bytes] | None]:
    """A Prefect server for the benchmark (yielded), unless PREFECT_API_URL names one already."""
    server = None if os.environ.get("PREFECT_API_URL") else start_server(tmp / "prefect")
    try:
        yield server
    finally:
        if server is not None:
            # The whole group, by PID: the server's own children outlived a plain terminate()
            # and kept a core busy through the next benchmark.
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def wait_idle(pid: int, below: float = 0.05, window: float = 3.0, limit: float = 900.0) -> float:
    """Wait until process `pid` uses under `below` of a core over `window` s; returns the wait.

    After a large run the server spends minutes digesting its events (and answers 503 to new
    flow runs meanwhile); a run measured then times the server's backlog, not the flow.
    """
    start = time.monotonic()
    while time.monotonic() - start < limit:
        before = process_cpu(pid)
        time.sleep(window)
        if (process_cpu(pid) - before) / window < below:
            break
    return time.monotonic() - start


def compare(label: str, ours: Callable[[], Any], theirs: Callable[[], Any], reps: int) -> None:
    timed(ours), timed(theirs)  # warm-up: imports, first connection, server caches
    a, b = [], []
    for i in range(reps):
        pair = [(a, ours), (b, theirs)] if i % 2 == 0 else [(b, theirs), (a, ours)]
        for bucket, fn in pair:
            bucket.append(timed(fn))
    fa, fb = statistics.median(a), statistics.median(b)
    print(f"{label:<10} flowforge {fa:7.2f} s   hand-written prefect {fb:7.2f} s   "
          f"ratio {fa / fb:5.3f}   (median of {reps}; flowforge min/max {min(a):.2f}/{max(a):.2f}, "
          f"prefect {min(b):.2f}/{max(b):.2f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--fanout", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, prefect_server(Path(tmp)):
        workdir = Path(tmp)
        compare("etl", flowforge_flow(etl_workflow(), workdir), prefect_etl(), args.reps)
        compare(f"fanout{args.fanout}", flowforge_flow(fanout_workflow(args.fanout), workdir),
                prefect_fanout(args.fanout), args.reps)


if __name__ == "__main__":
    main()
