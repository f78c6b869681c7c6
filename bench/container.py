"""Container execution: per-job container overhead, and docker-pool run latency.

Run by hand (not in CI):  .venv/bin/python bench/container.py [--reps 10] [--pool-reps 5]

1. per-job: the same one-line bash job (`echo hi`) run by FlowForge's ContainerExecutor (job
   directory, helpers, hardened options, labels, live log streaming, OOM check, removal) and
   by a raw `docker run --rm --network none <runner> bash -c 'echo hi'` (the CLI) and the SDK's
   `containers.run(remove=True)`; alternating, median of --reps. Goal: executor <= 1.3x raw.
   The executor runs twice: creating each job's container (cold) and taking it from a pool of
   pre-warmed ones (warm, `ContainerPool` as the warm runner keeps; the pool has refilled
   before each warm rep, as between jobs that are not back to back).
2. first line: from the executor's `run` called (a job's task starting) to the job's first
   output line in its log, warm and cold, against a raw `docker run` (the CLI started) to its
   first stdout line. Goal (issue 19): warm <= 0.5x raw.
3. pool: a two-job workflow run through a real `flowforge up --docker` stack on the process
   pool and on the docker pool; POST /runs -> terminal, median of --pool-reps.

Uses the tests' private dockerd (started if needed) and the runner image (built if missing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowforge.runtime.executors.container_pool import ContainerPool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _refilled(pool: ContainerPool) -> None:
    from flowforge.core.targets import ContainerTarget

    while pool.ready(ContainerTarget()) < pool.size:
        time.sleep(0.01)


def per_job(reps: int, image: str, pool: ContainerPool) -> None:
    from flowforge.core.targets import ContainerTarget
    from flowforge.runtime.executors.base import ScriptRequest
    from flowforge.runtime.executors.container import ContainerExecutor, docker_client

    executor = ContainerExecutor()
    warm = ContainerExecutor(pool=pool.socket_path)
    target = ContainerTarget()
    client = docker_client()

    def job(on: ContainerExecutor) -> None:
        result = on.run(ScriptRequest(name="bench", runtime="bash", script="echo hi",
                                      event={"workflow": "bench", "run_id": "bench"}),
                        lambda stream, line: None, target)
        assert result.error is None, result.error

    def flowforge_job() -> None:
        job(executor)

    def warm_job() -> None:
        job(warm)

    def raw_cli() -> None:
        subprocess.run(["docker", "run", "--rm", "--network", "none", image, "bash", "-c",
                        "echo hi"], check=True, capture_output=True)

    def raw_sdk() -> None:
        client.containers.run(image, ["bash", "-c", "echo hi"], remove=True, network_mode="none")

    variants = {"flowforge ContainerExecutor": flowforge_job,
                "flowforge ContainerExecutor, warm pool": warm_job,
                "raw docker run --rm (CLI)": raw_cli,
                "raw SDK containers.run(remove=True)": raw_sdk}
    for fn in variants.values():  # warm: image layers in page cache, SDK connection
        fn()
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            if fn is warm_job:
                _refilled(pool)
            t = time.perf_counter()
            fn()
            results[name].append(time.perf_counter() - t)
    print(f"\nper-job container, `echo hi`, n={reps} (alternating)")
    print(f"{'variant':40} {'median':>8} {'min':>8} {'max':>8}")
    for name, times in results.items():
        print(f"{name:40} {statistics.median(times):8.3f} {min(times):8.3f} {max(times):8.3f}")
    for variant in ("flowforge ContainerExecutor", "flowforge ContainerExecutor, warm pool"):
        ours = statistics.median(results[variant])
        for raw in ("raw docker run --rm (CLI)", "raw SDK containers.run(remove=True)"):
            print(f"ratio {variant} / {raw}: {ours / statistics.median(results[raw]):.2f}x")


def first_line(reps: int, image: str, pool: ContainerPool) -> None:
    from flowforge.core.targets import ContainerTarget
    from flowforge.runtime.executors.base import ScriptRequest
    from flowforge.runtime.executors.container import ContainerExecutor

    script = "echo first; sleep 0.2; echo last"

    def executor_first(on: ContainerExecutor) -> float:
        seen: list[float] = []
        started = time.perf_counter()
        result = on.run(ScriptRequest(name="bench", runtime="bash", script=script,
                                      event={"workflow": "bench", "run_id": "bench"}),
                        lambda stream, line: seen.append(time.perf_counter()), ContainerTarget())
        assert result.error is None and seen, result.error
        return seen[0] - started

    def raw_first() -> float:
        started = time.perf_counter()
        process = subprocess.Popen(["docker", "run", "--rm", "--network", "none", image, "bash",
                                    "-c", script], stdout=subprocess.PIPE)
        assert process.stdout is not None
        process.stdout.readline()
        first = time.perf_counter() - started
        process.communicate()
        return first

    variants = {"warm pool (executor run -> first line)":
                lambda: executor_first(ContainerExecutor(pool=pool.socket_path)),
                "cold (executor run -> first line)": lambda: executor_first(ContainerExecutor()),
                "raw docker run (CLI start -> first line)": raw_first}
    for fn in variants.values():
        fn()
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            if name.startswith("warm"):
                _refilled(pool)
            results[name].append(fn())
    print(f"\nfirst output line of a container job, n={reps} (alternating)")
    print(f"{'variant':44} {'median':>8} {'min':>8} {'max':>8}")
    for name, times in results.items():
        print(f"{name:44} {statistics.median(times):8.3f} {min(times):8.3f} {max(times):8.3f}")
    raw = statistics.median(results["raw docker run (CLI start -> first line)"])
    for name in list(variants)[:2]:
        print(f"ratio {name.split(' (')[0]} / raw docker run: "
              f"{statistics.median(results[name]) / raw:.2f}x")


def pools(reps: int) -> None:
    from tests.conftest import create_workflow, run_workflow, start_stack

    jobs = [{"name": "a", "runtime": "bash", "script": "echo a"},
            {"name": "b", "runtime": "python", "needs": ["a"],
             "script": "import flowforge_helpers as ff\nff.output({'ok': True})"}]
    with tempfile.TemporaryDirectory() as home, start_stack(Path(home), "--docker") as stack, \
            stack.client() as api:
        create_workflow(api, {"name": "bench-process", "jobs": jobs})
        create_workflow(api, {"name": "bench-docker", "jobs": jobs,
                              "settings": {"work_pool": "flowforge-docker"}})
        results: dict[str, list[float]] = {"process pool": [], "docker pool": []}
        for workflow in ("bench-process", "bench-docker"):  # warm
            assert run_workflow(api, workflow, timeout=300)["state"] == "COMPLETED"
        for _ in range(reps):
            for name, workflow in (("process pool", "bench-process"), ("docker pool", "bench-docker")):
                t = time.perf_counter()
                run = run_workflow(api, workflow, timeout=300)
                results[name].append(time.perf_counter() - t)
                assert run["state"] == "COMPLETED", run
    print(f"\nrun latency, POST /runs -> terminal, 2 jobs, n={reps} (alternating, worker poll 0.5 s)")
    print(f"{'pool':40} {'median':>8} {'min':>8} {'max':>8}")
    for name, times in results.items():
        print(f"{name:40} {statistics.median(times):8.3f} {min(times):8.3f} {max(times):8.3f}")
    print(f"ratio docker / process: "
          f"{statistics.median(results['docker pool']) / statistics.median(results['process pool']):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--pool-reps", type=int, default=5)
    parser.add_argument("--skip-pools", action="store_true")
    args = parser.parse_args()

    from flowforge.image import build_runner_image, runner_image_name
    from tests.fixtures.docker import ensure_dockerd

    os.environ["DOCKER_HOST"] = ensure_dockerd()
    from flowforge.runtime.executors.container import docker_client

    image = runner_image_name()
    try:
        docker_client().images.get(image)
    except Exception:
        build_runner_image()
    from flowforge.runtime.executors.container_pool import ContainerPool

    pool = ContainerPool(2)
    assert pool.start()
    try:
        per_job(args.reps, image, pool)
        first_line(args.reps, image, pool)
    finally:
        pool.close()
    if not args.skip_pools:
        pools(args.pool_reps)


if __name__ == "__main__":
    main()
