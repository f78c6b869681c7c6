"""Container execution: per-job container overhead, and docker-pool run latency.

Run by hand (not in CI):  .venv/bin/python bench/container.py [--reps 10] [--pool-reps 5]

1. per-job: the same one-line bash job (`echo hi`) run by FlowForge's ContainerExecutor (job
   directory, helpers, hardened options, labels, live log streaming, OOM check, removal) and
   by a raw `docker run --rm --network none <runner> bash -c 'echo hi'` (the CLI) and the SDK's
   `containers.run(remove=True)`; alternating, median of --reps. Goal: executor <= 1.3x raw.
2. pool: a two-job workflow run through a real `flowforge up --docker` stack on the process
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def per_job(reps: int, image: str) -> None:
    from flowforge.core.targets import ContainerTarget
    from flowforge.runtime.executors.base import ScriptRequest
    from flowforge.runtime.executors.container import ContainerExecutor, docker_client

    executor = ContainerExecutor()
    target = ContainerTarget()
    client = docker_client()

    def flowforge_job() -> None:
        result = executor.run(ScriptRequest(name="bench", runtime="bash", script="echo hi",
                                        event={"workflow": "bench", "run_id": "bench"}),
                              lambda stream, line: None, target)
        assert result.error is None, result.error

    def raw_cli() -> None:
        subprocess.run(["docker", "run", "--rm", "--network", "none", image, "bash", "-c",
                        "echo hi"], check=True, capture_output=True)

    def raw_sdk() -> None:
        client.containers.run(image, ["bash", "-c", "echo hi"], remove=True, network_mode="none")

    variants = {"flowforge ContainerExecutor": flowforge_job, "raw docker run --rm (CLI)": raw_cli,
                "raw SDK containers.run(remove=True)": raw_sdk}
    for fn in variants.values():  # warm: image layers in page cache, SDK connection
        fn()
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            results[name].append(time.perf_counter() - t)
    print(f"\nper-job container, `echo hi`, n={reps} (alternating)")
    print(f"{'variant':40} {'median':>8} {'min':>8} {'max':>8}")
    for name, times in results.items():
        print(f"{name:40} {statistics.median(times):8.3f} {min(times):8.3f} {max(times):8.3f}")
    ours = statistics.median(results["flowforge ContainerExecutor"])
    for raw in ("raw docker run --rm (CLI)", "raw SDK containers.run(remove=True)"):
        print(f"ratio flowforge / {raw}: {ours / statistics.median(results[raw]):.2f}x")


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
    per_job(args.reps, image)
    if not args.skip_pools:
        pools(args.pool_reps)


if __name__ == "__main__":
    main()
