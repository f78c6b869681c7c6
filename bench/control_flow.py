"""Control flow at scale: for-each over N items and a 1,000-job DAG, FlowForge vs hand-written Prefect.

Run by hand (not in CI):
    .venv/bin/python bench/control_flow.py [--items 1000 10000] [--dag 1000] [--reps 3]

Workloads, each as a FlowForge workflow (compiled, the generated flow called in-process) and as
the flow a Prefect user would write by hand, both doing the same subprocess work (`bash -c true`
per item or job) with the same thread width:

* foreach N: one job mapping N items, `max_parallel: 10`  vs  two hand-written flows:
  `prefect` maps at flow level (`each.map(range(N))` on the flow's
  `ThreadPoolTaskRunner(max_workers=10)`), the way Prefect's docs show it; `nested` maps inside
  a parent task on a `ThreadPoolTaskRunner(max_workers=10)` of its own, which is what
  FlowForge's generated flow does (the list is known only when the job runs);
* dag N: one root, N-2 parallel jobs, one sink, 10 threads  vs  `submit(wait_for=...)` in an
  async flow (`prefect`, as `bench/etl.py`) and in a sync flow (`sync`); plus the time to
  validate and compile the N-job document (median of 5).

Each measured run is a fresh Python process (so peak RSS, `ru_maxrss`, is that variant's own);
the variants alternate. Besides wall time and peak RSS, a run reports its CPU seconds: the
flow process with its jobs and FlowForge's launcher, plus the Prefect server's from the run's
start until the server is idle again (when the bench started the server). A Prefect server is
started on a free port unless PREFECT_API_URL is set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WIDTH = 10


def foreach_workflow(n: int) -> dict[str, Any]:
    return {"name": "bench-foreach", "inputs": {"n": {"type": "integer"}},
            "jobs": [{"name": "each", "runtime": "bash", "script": "true",
                      "for_each": "{{ range(inputs.n) | list }}", "max_parallel": WIDTH}]}


def dag_workflow(n: int) -> dict[str, Any]:
    from bench.etl import fanout_workflow

    doc = fanout_workflow(n)
    doc["name"] = "bench-dag"
    return doc


def _flowforge(doc: dict[str, Any], workdir: Path, **params: Any) -> Any:
    import runpy

    from flowforge.controlplane.compiler import compile_workflow
    from flowforge.core.validation import load_workflow

    compiled = compile_workflow(load_workflow(doc))
    flow = runpy.run_path(str(compiled.write(workdir / "flows")))[compiled.function]
    return lambda: asyncio.run(flow(return_state=True, **params))


def _prefect_foreach(n: int) -> Any:
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.futures import wait
    from prefect.task_runners import ThreadPoolTaskRunner

    @task(cache_policy=NO_CACHE, persist_result=False, task_run_name="each[{i}]")
    def each(i: int) -> None:
        subprocess.run(["bash", "-c", "true"], check=True)

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=WIDTH))
    async def hand_foreach() -> None:
        await asyncio.to_thread(wait, list(each.map(range(n))))

    return lambda: asyncio.run(hand_foreach(return_state=True))


def _prefect_nested_foreach(n: int) -> Any:
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.futures import wait
    from prefect.task_runners import ThreadPoolTaskRunner

    @task(cache_policy=NO_CACHE, persist_result=False, task_run_name="each[{i}]")
    def each(i: int) -> None:
        subprocess.run(["bash", "-c", "true"], check=True)

    @task(cache_policy=NO_CACHE, persist_result=False)
    def parent() -> None:
        runner: ThreadPoolTaskRunner[Any]
        with ThreadPoolTaskRunner(max_workers=WIDTH) as runner:
            wait(list(runner.map(each, {"i": range(n)})))

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=WIDTH))
    async def hand_nested() -> None:
        await asyncio.to_thread(parent.submit().wait)

    return lambda: asyncio.run(hand_nested(return_state=True))


def _prefect_sync_dag(n: int) -> Any:
    """The DAG as a sync flow: Prefect's flow engine then shares one sync client with every
    task thread, which an async flow (as `bench/etl.py` writes it) does not."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    @task(cache_policy=NO_CACHE, persist_result=False)
    def noop() -> None:
        subprocess.run(["bash", "-c", "true"], check=True)

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=WIDTH))
    def hand_sync_fanout() -> None:
        root = noop.with_options(name="root").submit()
        mids = [noop.with_options(name=f"mid{i:04d}").submit(wait_for=[root])
                for i in range(n - 2)]
        noop.with_options(name="sink").submit(wait_for=mids).wait()

    return lambda: hand_sync_fanout(return_state=True)


def measure_one(kind: str, variant: str, n: int) -> dict[str, float]:
    """One run in this process: wall time and this process's peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "foreach":
            fn = (_flowforge(foreach_workflow(n), Path(tmp), n=n) if variant == "flowforge"
                  else _prefect_nested_foreach(n) if variant == "nested"
                  else _prefect_foreach(n))
        else:
            from bench.etl import prefect_fanout

            fn = (_flowforge(dag_workflow(n), Path(tmp)) if variant == "flowforge"
                  else _prefect_sync_dag(n) if variant == "sync" else prefect_fanout(n))
        cpu_before = _cpu_with_children()
        start = time.perf_counter()
        state = fn()
        wall = time.perf_counter() - start
    if not state.is_completed():
        raise RuntimeError(f"{kind} {variant} did not complete: {state}")
    _reap_launcher()
    return {"wall": wall, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cpu": _cpu_with_children() - cpu_before}


def _cpu_with_children() -> float:
    """CPU seconds of this process and of every child it has reaped (jobs, the launcher)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _reap_launcher() -> None:
    """End FlowForge's job launcher and wait for it, so its CPU (and its jobs') is counted as
    this process's children's; at exit it would be orphaned instead, and not counted."""
    from flowforge.runtime.executors.launcher import Launcher

    launcher = Launcher._current
    if launcher is not None and launcher.proc.stdin is not None:
        launcher.proc.stdin.close()
        launcher.proc.wait(30)


def run_child(kind: str, variant: str, n: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", kind, variant, str(n)],
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def compile_time(n: int, reps: int = 5) -> float:
    from flowforge.controlplane.compiler import compile_workflow
    from flowforge.core.validation import load_workflow

    doc = dag_workflow(n)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        compile_workflow(load_workflow(json.loads(json.dumps(doc))))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(kind: str, n: int, reps: int, baselines: list[str], settle: float = 0,
            server: int | None = None) -> None:
    """FlowForge against each hand-written baseline, variants alternating within a rep.

    Before each run the server (`server`, its PID, when the bench started it) must be idle,
    having recorded the last run's events (after 1,000+ task runs it is busy for minutes and
    answers 503 to new flow runs), then `settle` more seconds pass; the server's CPU from the
    start of a run until it is idle again is that run's.

    This machine's speed drifts by 10-20% between runs minutes apart (CPU seconds for the same
    work drift as much as wall time), so besides the ratio of medians each baseline gets the
    median of its per-rep ratios: a rep's variants run back to back, under the same drift.
    """
    from bench.etl import process_cpu, wait_idle

    results: dict[str, list[dict[str, float]]] = {v: [] for v in ["flowforge", *baselines]}
    # Warm-up at the real scale: the first large run on a fresh server was up to 1.8x slower
    # than the rest (10.5 s against 5.7-6.0 s for the same FlowForge run), and ABBA order puts
    # FlowForge in that seat.
    for variant in results:
        if server is not None:
            wait_idle(server)
        run_child(kind, variant, min(n, 1000))
    for i in range(reps):
        order = list(results) if i % 2 == 0 else list(results)[::-1]
        for variant in order:
            if server is not None:
                wait_idle(server)
            time.sleep(settle)
            server_before = process_cpu(server) if server is not None else 0.0
            run = run_child(kind, variant, n)
            if server is not None:
                wait_idle(server)
                run["server_cpu"] = process_cpu(server) - server_before
            results[variant].append(run)
            print(f"  {kind}{n} {variant}: " + ", ".join(f"{k} {v:.2f}" for k, v in run.items()),
                  flush=True)
    ours = results["flowforge"]
    for variant, runs in results.items():
        walls = [r["wall"] for r in runs]
        line = (f"{kind}{n:<6} {variant:<10} {statistics.median(walls):8.2f} s "
                f"({min(walls):.2f}-{max(walls):.2f}, median of {reps})  "
                f"peak RSS {max(r['rss_mb'] for r in runs):5.0f} MB  CPU {_median_cpu(runs):6.1f} s")
        if variant != "flowforge":
            paired = [a["wall"] / b["wall"] for a, b in zip(ours, runs, strict=True)]
            ratio = statistics.median(r["wall"] for r in ours) / statistics.median(walls)
            line += (f"   flowforge/{variant}: {ratio:5.3f} (per rep {statistics.median(paired):5.3f}, "
                     f"{min(paired):.3f}-{max(paired):.3f}; CPU {_median_cpu(ours) / _median_cpu(runs):5.3f})")
        print(line, flush=True)


def _median_cpu(runs: list[dict[str, float]]) -> float:
    """CPU of the flow process, its jobs and launcher, and the Prefect server's share."""
    return statistics.median(r["cpu"] + r.get("server_cpu", 0.0) for r in runs)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(measure_one(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return
    from bench.etl import prefect_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--dag", type=int, nargs="*", default=[1000])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--settle", type=float, default=0, help="seconds of rest before each run")
    parser.add_argument("--baselines", nargs="*", default=["prefect", "nested"],
                        help="hand-written for-each variants to compare with")
    args = parser.parse_args()
    for n in args.dag:
        print(f"compile dag{n}: {compile_time(n) * 1000:.0f} ms (validate + compile, median of 5)",
              flush=True)
    with tempfile.TemporaryDirectory() as tmp, prefect_server(Path(tmp)) as server:
        pid = server.pid if server is not None else None
        run_child("foreach", "flowforge", 10)  # warm-up: server caches, first flow
        run_child("foreach", "prefect", 10)
        for n in args.items:
            compare("foreach", n, args.reps, args.baselines, args.settle, pid)
        for n in args.dag:
            compare("dag", n, args.reps, ["prefect", "sync"], args.settle, pid)


if __name__ == "__main__":
    main()
