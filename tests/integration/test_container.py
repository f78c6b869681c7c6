"""Container execution with the real Docker engine and the runner image.

The executor tests call `ContainerExecutor` directly (fast, precise about the container),
each twice: in a container created for the job, and in one taken from a pool of pre-warmed
ones (`ContainerPool`, as the warm runner keeps); the rest go through a real
`flowforge up --docker` stack: container jobs on the process worker (from its warm pool),
cancel, the reaper, and a whole workflow on the docker work pool.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from flowforge.core.targets import ContainerTarget
from flowforge.image import build_image
from flowforge.runtime.executors import warm_containers
from flowforge.runtime.executors.base import ScriptRequest, ScriptResult
from flowforge.runtime.executors.container import (
    LABEL_PREFECT,
    LABEL_RUN,
    ContainerExecutor,
    docker_client,
    leftovers,
)
from flowforge.runtime.executors.container_pool import ContainerPool
from flowforge.stack.up import reap_leftovers
from tests.conftest import (
    BIN,
    Stack,
    create_workflow,
    free_port,
    jobs_by_name,
    run_workflow,
    start_stack,
    wait_http,
    wait_run,
)
from tests.fixtures.docker import restart_dockerd

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def run_job(executor: ContainerExecutor, runtime: str, script: str,
            log: list[tuple[str, str]] | None = None, **options: Any) -> ScriptResult:
    timeout = options.pop("job_timeout", None)
    lines = log if log is not None else []
    if executor.pool is not None:  # the warm run: its option set warmed first, as after a miss
        wait_until_warm(POOLS[executor.pool], ContainerTarget(**options))
    job = ScriptRequest(name="t", runtime=runtime, script=textwrap.dedent(script),  # type: ignore[arg-type]
                    input={"inputs": {"n": 2}, "params": {}, "jobs": {}, "item": None,
                           "trigger": {"type": "manual"}},
                    event={"workflow": "wf-test", "job": "t", "run_id": "direct-test"},
                    variables={"greeting": "hello"}, timeout=timeout)
    return executor.run(
        job, lambda stream, line: lines.append((stream, line)), ContainerTarget(**options))


def job_containers(run_id: str | None = None) -> list[Any]:
    """Job containers (of `run_id`): created for it, or warm ones it claimed."""
    found = [c for c in leftovers() if warm_containers.run_of(c, LABEL_RUN) is not None]
    return [c for c in found if run_id is None or warm_containers.run_of(c, LABEL_RUN) == run_id]


@pytest.fixture(scope="module", autouse=True)
def engine(docker_host: str, runner_image: str) -> str:
    return runner_image


POOLS: dict[Path, ContainerPool] = {}


@pytest.fixture(scope="module")
def warm_pool(engine: str) -> Iterator[ContainerPool]:
    pool = ContainerPool(2)
    assert pool.start() and pool.socket_path is not None
    POOLS[pool.socket_path] = pool
    yield pool
    pool.close()
    del POOLS[pool.socket_path]
    assert [c for c in leftovers() if c.labels.get(warm_containers.LABEL_OWNER) == pool.owner] == []


@pytest.fixture(params=["cold", "warm"])
def executor(request: pytest.FixtureRequest) -> Iterator[ContainerExecutor]:
    """A container executor whose containers are created per job, or taken from the pool;
    the warm one must have taken every container from the pool."""
    if request.param == "cold":
        yield ContainerExecutor()
        return
    pool: ContainerPool = request.getfixturevalue("warm_pool")
    wait_until_warm(pool, ContainerTarget())
    before = pool.claims
    yield ContainerExecutor(pool=pool.socket_path)
    assert pool.claims > before and pool.misses_of(ContainerTarget()) == 0


def wait_until_warm(pool: ContainerPool, options: ContainerTarget, timeout: float = 60) -> None:
    pool.prewarm(options)
    deadline = time.monotonic() + timeout
    while pool.ready(options) < pool.size:
        assert time.monotonic() < deadline, "the pool never filled"
        time.sleep(0.05)


# --- the executor, directly ---------------------------------------------------------------------


@pytest.mark.parametrize(("runtime", "script"), [
    ("python", """
        import flowforge_helpers as ff
        n = ff.input()["inputs"]["n"]
        print("python sees", n, ff.get_variable("greeting"))
        ff.set_variable("seen", n)
        ff.output({"double": n * 2})
        ff.set_condition(True)
    """),
    ("bash", """
        source "$FLOWFORGE_HELPERS/flowforge.sh"
        n=$(ff_input | python3 -c 'import json,sys; print(json.load(sys.stdin)["inputs"]["n"])')
        echo "bash sees $n $(ff_get_variable greeting)"
        ff_set_variable seen "$n"
        ff_output "{\\"double\\": $((n * 2))}"
        ff_set_condition true
    """),
    ("node", """
        const ff = require("flowforge");
        const n = ff.input().inputs.n;
        console.log("node sees", n, ff.get_variable("greeting"));
        ff.set_variable("seen", n);
        ff.output({double: n * 2});
        ff.set_condition(true);
    """),
])
def test_helpers_work_in_a_container(executor: ContainerExecutor, runtime: str,
                                     script: str) -> None:
    log: list[tuple[str, str]] = []
    result = run_job(executor, runtime, script, log)
    assert result.error is None, (result, log)
    assert result.output == {"double": 4}
    assert result.condition is True
    assert result.variables_set == {"seen": 2}
    assert any(stream == "stdout" and line.startswith(f"{runtime} sees 2 ") and "hello" in line
               for stream, line in log), log
    assert job_containers("direct-test") == []


def test_isolation_facts_from_inside(executor: ContainerExecutor, tmp_path: Path) -> None:
    marker = tmp_path / "host-secret.txt"
    marker.write_text("host only")
    os.environ["PREFECT_API_KEY"] = "pk-must-not-leak"  # as a worker would have
    try:
        result = run_job(executor, "python", f"""
            import json, os, socket
            import flowforge_helpers as ff
            facts = {{"uid": os.getuid()}}
            try:
                socket.create_connection(("127.0.0.1", 22), timeout=2)
                facts["net"] = "connected"
            except OSError as exc:
                facts["net"] = type(exc).__name__
            facts["ifaces"] = sorted(os.listdir("/sys/class/net"))
            try:
                open("/evil", "w").write("x")
                facts["root_write"] = "ok"
            except OSError as exc:
                facts["root_write"] = exc.strerror
            open("/tmp/scratch", "w").write("tmp is writable")
            facts["env"] = sorted(k for k in os.environ if k.startswith(("PREFECT_", "FLOWFORGE_")))
            facts["host_file"] = os.path.exists({str(marker)!r}) or os.path.exists("/work")
            status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
            facts["cap_eff"] = status["CapEff"].strip()
            facts["no_new_privs"] = status["NoNewPrivs"].strip()
            mounts = [l.split()[1] for l in open("/proc/self/mounts")]
            facts["job_mount"] = "/job" in mounts
            ff.output(facts)
        """)
    finally:
        del os.environ["PREFECT_API_KEY"]
    assert result.error is None, result
    facts = result.output
    assert facts["uid"] == 65534
    assert facts["net"] in ("ConnectionRefusedError", "OSError", "TimeoutError")
    assert facts["ifaces"] == ["lo"]  # network none: no way out
    assert facts["root_write"] == "Read-only file system"
    assert facts["env"] == ["FLOWFORGE_HELPERS", "FLOWFORGE_JOB_DIR"]  # the helper paths only
    assert facts["host_file"] is False
    assert facts["cap_eff"] == "0000000000000000"
    assert facts["no_new_privs"] == "1"
    assert facts["job_mount"] is True


def test_out_of_memory_is_a_clear_failure(executor: ContainerExecutor) -> None:
    result = run_job(executor, "python", "x = bytearray(400 * 1024 * 1024)\nprint(len(x))", memory="128m")
    assert result.error == "killed: out of memory (limit 128m)"
    assert job_containers("direct-test") == []


def test_fork_bomb_is_contained_and_the_worker_unharmed(executor: ContainerExecutor) -> None:
    started = time.monotonic()
    log: list[tuple[str, str]] = []
    result = run_job(executor, "bash", ":(){ :|:& };: ; sleep 60", log, pids_limit=64,
                     job_timeout=5)
    assert result.error == "timed out after 5s"
    assert time.monotonic() - started < 30
    assert any("Resource temporarily unavailable" in line for _, line in log)  # pids limit hit
    assert job_containers("direct-test") == []
    # This process (standing in for the worker) still forks and runs jobs.
    assert subprocess.run(["true"], check=False).returncode == 0
    assert run_job(executor, "bash", "echo alive").error is None


def test_timeout_stops_and_removes_the_container(executor: ContainerExecutor) -> None:
    log: list[tuple[str, str]] = []
    started = time.monotonic()
    result = run_job(executor, "bash", "echo begin; sleep 120", log, timeout=2)
    assert result.error == "timed out after 2s"
    assert time.monotonic() - started < 15
    assert ("stdout", "begin") in log
    assert job_containers("direct-test") == []


def test_output_streams_live(executor: ContainerExecutor) -> None:
    stamps: list[float] = []
    log: list[tuple[str, str]] = []

    def record(stream: str, line: str) -> None:
        stamps.append(time.monotonic())
        log.append((stream, line))

    job = ScriptRequest(name="live", runtime="bash", script="echo one; sleep 2; echo two >&2",
                    event={"run_id": "direct-test"})
    result = executor.run(job, record, ContainerTarget())
    assert result.error is None and log == [("stdout", "one"), ("stderr", "two")]
    assert stamps[1] - stamps[0] > 1.5  # "one" arrived while the job still ran


# --- the pool of pre-warmed containers ----------------------------------------------------------


def pool_containers(pool_owner: str) -> list[Any]:
    return [c for c in leftovers() if c.labels.get(warm_containers.LABEL_OWNER) == pool_owner]


def test_a_warm_container_runs_one_job_then_goes_and_the_pool_refills(
        warm_pool: ContainerPool) -> None:
    executor = ContainerExecutor(pool=warm_pool.socket_path)
    wait_until_warm(warm_pool, ContainerTarget())
    ready = {c.id[:12] for c in pool_containers(warm_pool.owner)}
    seen = []
    for _ in range(3):  # more jobs than the pool holds: it refills behind them
        log: list[tuple[str, str]] = []
        result = run_job(executor, "bash", "hostname", log)
        assert result.error is None, result
        seen.append(log[0][1])
    assert seen[0] in ready  # made before the job asked
    assert len(set(seen)) == 3  # no container ran two jobs
    for container_id in seen:  # and each is gone after its job
        with pytest.raises(docker_errors().NotFound):
            docker_client().containers.get(container_id)
    wait_until_warm(warm_pool, ContainerTarget())
    assert not {c.id[:12] for c in pool_containers(warm_pool.owner)} & set(seen)


def docker_errors() -> Any:
    import docker

    return docker.errors


def test_warm_containers_of_a_changed_image_are_drained(warm_pool: ContainerPool) -> None:
    tag = f"flowforge-warm-test:{uuid.uuid4().hex[:8]}"
    client = docker_client()
    base = client.images.get(warm_containers.pool_key(ContainerTarget())["image"])
    base.tag(tag)
    options = ContainerTarget(image=tag)
    key = warm_containers.key_id(warm_containers.pool_key(options))
    try:
        wait_until_warm(warm_pool, options)
        old = [c.id for c in pool_containers(warm_pool.owner)
               if c.labels[warm_containers.LABEL_WARM] == key]
        assert len(old) == 2
        # The tag now names another image (a rebuilt runner image, say).
        dockerfile = f"FROM {base.id}\nLABEL flowforge.test={uuid.uuid4().hex}\n"
        rebuilt, _ = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
        assert rebuilt.id != base.id
        log: list[tuple[str, str]] = []
        result = run_job(ContainerExecutor(pool=warm_pool.socket_path), "bash", "echo ok", log,
                         image=tag)
        assert result.error is None and log == [("stdout", "ok")]
        deadline = time.monotonic() + 30
        while any(c.id in old for c in pool_containers(warm_pool.owner)):
            assert time.monotonic() < deadline, "the old image's warm containers stayed"
            time.sleep(0.2)
        wait_until_warm(warm_pool, options)
        fresh = [c for c in pool_containers(warm_pool.owner)
                 if c.labels[warm_containers.LABEL_WARM] == key]
        assert fresh and all(c.image.id == rebuilt.id for c in fresh)
    finally:
        with contextlib.suppress(Exception):
            client.images.remove(tag, force=True)


def test_a_killed_pools_containers_are_removed_by_gc(docker_stack: Stack, tmp_path: Path) -> None:
    """A worker SIGKILLed with warm containers ready leaves them; `flowforge gc` (and every
    reaper) removes them, since their pool is gone, and not those of a live pool."""
    script = tmp_path / "pool.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from flowforge.core.targets import ContainerTarget
        from flowforge.runtime.executors.container_pool import ContainerPool
        pool = ContainerPool(2)
        assert pool.start()
        while pool.ready(ContainerTarget()) < 2:
            time.sleep(0.05)
        print(pool.owner, flush=True)
        time.sleep(600)
    """))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                               env=docker_stack.prefect_env())
    try:
        assert process.stdout is not None
        owner = process.stdout.readline().strip()
        assert len(pool_containers(owner)) == 2
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert len(pool_containers(owner)) == 2  # left behind
    deadline = time.monotonic() + 60
    while not (live := [c for c in leftovers(scope=docker_stack.prefect_url)
                        if c.labels.get(warm_containers.LABEL_OWNER) not in (None, owner)]):
        assert time.monotonic() < deadline, "the stack's worker keeps no warm containers"
        time.sleep(0.3)  # the stack's own pool, still filling when the stack is fresh
    gc = subprocess.run([str(BIN / "flowforge"), "gc"], capture_output=True, text=True,
                        env=docker_stack.prefect_env(), timeout=60)
    assert gc.returncode == 0, gc.stderr
    assert pool_containers(owner) == []
    assert live and all(c.labels[LABEL_PREFECT] == live[0].labels[LABEL_PREFECT] for c in live)
    still = {c.id for c in leftovers(scope=docker_stack.prefect_url)}
    assert all(c.id in still for c in live)  # the stack's own pool is untouched


# --- the real stack ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_stack(tmp_path_factory: pytest.TempPathFactory, engine: str) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("ffdocker"), "--docker") as started:
        yield started
    # A stopped worker leaves no warm container (nor any job container) of its Prefect behind.
    left = leftovers(scope=started.prefect_url)
    assert left == [], [(c.short_id, c.status, c.labels) for c in left]


@pytest.fixture
def dapi(docker_stack: Stack) -> Iterator[httpx.Client]:
    # A longer timeout than the shared client's: a workflow POST deploys to Prefect, which
    # took over 60 s on this two-core machine while other test suites ran beside ours.
    with docker_stack.client() as client:
        yield client


def test_container_jobs_through_the_stack(dapi: httpx.Client) -> None:
    create_workflow(dapi, """
name: container-etl
inputs: {rows: {type: integer, default: 21}}
jobs:
  - name: extract
    runtime: python
    target: {container: {memory: 128m}}
    script: |
      import flowforge_helpers as ff
      rows = ff.input()["inputs"]["rows"]
      print(f"extracting {rows} rows")
      ff.output({"rows": rows})
      ff.set_condition(rows > 10)
  - name: transform
    runtime: bash
    needs: [{job: extract, on: "true"}]
    env: {ROWS: "{{ jobs.extract.output.rows }}"}
    target: {container: {}}
    script: |
      source "$FLOWFORGE_HELPERS/flowforge.sh"
      ff_output "{\\"rows\\": $((ROWS * 2)), \\"user\\": \\"$(id -u)\\"}"
  - name: hungry
    runtime: python
    needs: [extract]
    continue_on_error: true
    target: {container: {memory: 64m}}
    script: |
      x = bytearray(300 * 1024 * 1024)
outputs: {rows: "{{ jobs.transform.output.rows }}"}
""")
    run = run_workflow(dapi, "container-etl", timeout=180)
    jobs = jobs_by_name(run)
    assert run["state"] == "COMPLETED", run
    assert jobs["extract"]["output"] == {"rows": 21}
    # transform runs only on extract's `true` condition, set by the helper in the container
    assert jobs["transform"]["output"] == {"rows": 42, "user": "65534"}
    assert jobs["hungry"]["state"] == "FAILED"
    assert jobs["hungry"]["error"] == "killed: out of memory (limit 64m)"
    assert run["outputs"] == {"rows": 42}
    deadline = time.monotonic() + 30
    while True:  # Prefect writes logs in batches
        logs = dapi.get(f"/runs/{run['id']}/logs").json()
        if any("extracting 21 rows" in line["message"] for line in logs) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert any(line["job"] == "extract" and "extracting 21 rows" in line["message"] for line in logs)
    assert job_containers(run["id"]) == []


def test_container_jobs_start_in_the_workers_warm_containers(docker_stack: Stack,
                                                             dapi: httpx.Client) -> None:
    """The warm runner keeps containers ready (the default set: the runner image, default
    hardening) and the run's container job takes one of them."""
    deadline = time.monotonic() + 60
    while True:
        warm = [c for c in leftovers(scope=docker_stack.prefect_url)
                if warm_containers.LABEL_WARM in c.labels
                and warm_containers.run_of(c, LABEL_RUN) is None]
        if len(warm) >= 2:
            break
        assert time.monotonic() < deadline, "the worker keeps no warm containers"
        time.sleep(0.3)
    create_workflow(dapi, {"name": "warm-container", "jobs": [
        {"name": "where", "runtime": "python", "target": {"container": {}}, "script":
         "import socket, flowforge_helpers as ff\nff.output({'host': socket.gethostname()})"}]})
    run = run_workflow(dapi, "warm-container", timeout=120)
    assert run["state"] == "COMPLETED", run
    assert jobs_by_name(run)["where"]["output"]["host"] in {c.id[:12] for c in warm}
    assert job_containers(run["id"]) == []


def test_host_network_needs_the_workflow_setting_and_the_namespace_policy(
        dapi: httpx.Client) -> None:
    """The document asks for the host's network; only an admin's namespace policy grants it."""
    doc: dict[str, Any] = {"name": "host-net", "namespace": "hostnet", "jobs": [
        {"name": "probe", "runtime": "bash", "script": "true",
         "target": {"container": {"network": "host"}}}]}
    response = dapi.post("/workflows", json=doc)
    assert response.status_code == 422
    problem = response.json()["error"]["details"][0]
    assert problem["job"] == "probe" and problem["field"] == "jobs[0].target.container.network"
    doc["settings"] = {"allow_host_network": True}
    refused = dapi.post("/workflows", json=doc)  # the document alone cannot grant it
    assert refused.status_code == 422, refused.text
    assert "namespace 'hostnet'" in refused.json()["error"]["details"][0]["message"]
    granted = dapi.put("/namespaces/hostnet", json={"policy": {"allow_host_network": True}})
    assert granted.status_code == 200, granted.text
    doc["jobs"][0]["script"] = "ls /sys/class/net | grep -qv '^lo$'"  # more than lo: the host's
    create_workflow(dapi, doc)
    assert run_workflow(dapi, "host-net", timeout=120)["state"] == "COMPLETED"


def wait_for_container(run_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any(c.status == "running" for c in job_containers(run_id)):
        assert time.monotonic() < deadline, "the job's container never started"
        time.sleep(0.3)


def test_cancel_removes_the_container(dapi: httpx.Client) -> None:
    create_workflow(dapi, {"name": "container-cancel", "jobs": [
        {"name": "sleepy", "runtime": "bash", "script": "echo waiting; sleep 300",
         "target": {"container": {}}}]})
    response = dapi.post("/workflows/container-cancel/runs", json={"inputs": {}})
    run_id = response.json()["run_id"]
    wait_for_container(run_id)
    assert dapi.post(f"/runs/{run_id}/cancel").status_code == 202
    run = wait_run(dapi, run_id, timeout=90)
    assert run["state"] == "CANCELLED"
    deadline = time.monotonic() + 20
    while job_containers(run_id) and time.monotonic() < deadline:
        time.sleep(0.3)
    left = job_containers(run_id)
    assert left == [], [(c.short_id, c.status, c.labels, c.attrs["State"]) for c in left]


def orphan_container(run_id: str, tmp_path: Path, prefect_url: str) -> None:
    """Leave a running job container behind the way a SIGKILLed worker does."""
    script = tmp_path / f"worker-{run_id}.py"
    script.write_text(textwrap.dedent(f"""
        from flowforge.runtime.executors.container import ContainerExecutor
        from flowforge.runtime.executors.base import ScriptRequest
        from flowforge.core.targets import ContainerTarget
        ContainerExecutor().run(
            ScriptRequest(name="orphan", runtime="bash", script="sleep 300",
                          event={{"workflow": "w", "run_id": "{run_id}"}}),
            lambda stream, line: None, ContainerTarget())
    """))
    worker = subprocess.Popen([sys.executable, str(script)],
                              env={**os.environ, "PREFECT_API_URL": prefect_url})
    try:
        wait_for_container(run_id)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert [c.status for c in job_containers(run_id)] == ["running"]  # left behind


def test_killed_workers_container_is_reaped(docker_stack: Stack, dapi: httpx.Client,
                                            tmp_path: Path) -> None:
    """A worker SIGKILLed mid-job leaves its container; the next run with container jobs
    removes it, and so do `flowforge gc` and `flowforge up`'s reaper, since Prefect knows no
    live run of that id."""
    # Fresh ids: concurrent test sessions share one engine and must not see each other's.
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    orphan_container(first, tmp_path, docker_stack.prefect_url)
    create_workflow(dapi, {"name": "reaps", "jobs": [
        {"name": "j", "runtime": "bash", "script": "true", "target": {"container": {}}}]})
    assert run_workflow(dapi, "reaps", timeout=120)["state"] == "COMPLETED"
    deadline = time.monotonic() + 30
    while job_containers(first) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert job_containers(first) == []

    orphan_container(second, tmp_path, docker_stack.prefect_url)
    gc = subprocess.run([str(BIN / "flowforge"), "gc"], capture_output=True, text=True,
                        env=docker_stack.prefect_env(), timeout=60)
    assert gc.returncode == 0, gc.stderr
    assert job_containers(second) == []
    assert "1 container(s) removed" in gc.stdout

    # What `flowforge up` runs before it starts the workers.
    orphan_container(second, tmp_path, docker_stack.prefect_url)
    reap_leftovers(docker_stack.prefect_url, Console(file=io.StringIO()),
                   auth=docker_stack.prefect_auth)
    assert job_containers(second) == []

    # Another Prefect's containers are not this gc's to judge.
    orphan_container(first, tmp_path, "http://127.0.0.1:9/api")
    gc = subprocess.run([str(BIN / "flowforge"), "gc"], capture_output=True, text=True,
                        env=docker_stack.prefect_env(), timeout=60)
    assert "0 container(s) removed" in gc.stdout and len(job_containers(first)) == 1
    gc = subprocess.run([str(BIN / "flowforge"), "gc", "--all"], capture_output=True, text=True,
                        env=docker_stack.prefect_env(), timeout=60)
    assert gc.returncode == 0 and job_containers(first) == []


def test_a_whole_workflow_on_the_docker_pool(dapi: httpx.Client) -> None:
    create_workflow(dapi, {
        "name": "on-docker-pool",
        "settings": {"work_pool": "flowforge-docker"},
        "jobs": [
            {"name": "where", "runtime": "python", "script": textwrap.dedent("""
                import os, flowforge_helpers as ff
                ff.output({"in_container": os.path.exists("/.dockerenv"),
                           "flowforge": os.path.isdir("/opt/flowforge/lib/flowforge")})
            """)},
            {"name": "facts", "runtime": "python", "script": textwrap.dedent("""
                import os, flowforge_helpers as ff
                status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
                try:
                    open("/evil", "w").write("x")
                    root_write = "ok"
                except OSError as exc:
                    root_write = exc.strerror
                def cgroup(*names):  # cgroup v2 file, then v1's
                    for name in names:
                        try:
                            return open(f"/sys/fs/cgroup/{name}").read().strip()
                        except OSError:
                            pass
                ff.output({"uid": os.getuid(), "cwd_tmp": os.getcwd().startswith("/tmp/"),
                           "cap_eff": status["CapEff"].strip(),
                           "no_new_privs": status["NoNewPrivs"].strip(),
                           "root_write": root_write,
                           "memory_max": cgroup("memory.max", "memory/memory.limit_in_bytes"),
                           "pids_max": cgroup("pids.max", "pids/pids.max"),
                           "pid1": open("/proc/1/comm").read().strip(),
                           "root_mode": oct(os.stat("/root").st_mode & 0o777)})
            """)},
            {"name": "after", "runtime": "bash", "needs": ["where"],
             "script": 'source "$FLOWFORGE_HELPERS/flowforge.sh"; ff_output \'{"ok": true}\''},
        ],
    })
    run = run_workflow(dapi, "on-docker-pool", timeout=180)
    assert run["state"] == "COMPLETED", str(run)
    jobs = jobs_by_name(run)
    assert jobs["where"]["output"] == {"in_container": True, "flowforge": True}
    assert jobs["after"]["output"] == {"ok": True}
    # The flow-run container is hardened like a container job, bar the network (host, to
    # reach Prefect): not root, no capabilities, read-only root, limits, tini as PID 1.
    facts = jobs["facts"]["output"]
    assert facts["uid"] != 0 and facts["cwd_tmp"] is True  # the job directory is on the tmpfs
    assert facts["cap_eff"] == "0000000000000000" and facts["no_new_privs"] == "1"
    assert facts["root_write"] == "Read-only file system"
    assert facts["memory_max"] == str(4 * 1024**3) and facts["pids_max"] == "4096"
    assert facts["pid1"] in ("tini", "docker-init")
    assert facts["root_mode"] == "0o711"  # a project under root's home stays reachable
    body = dapi.get("/workflows/on-docker-pool").json()
    assert json.dumps(body).count("flowforge-docker") >= 1


@pytest.mark.slow
def test_service_image_builds_and_serves(engine: str) -> None:
    """The repository's Dockerfile builds the service image the same registry-free way, and
    `flowforge up` inside it answers on 127.0.0.1 (host network, as everything here)."""
    name = build_image("service", log=lambda _: None)
    api_port, prefect_port = free_port(), free_port()
    container = docker_client().containers.run(
        name, detach=True, network_mode="host",
        environment={"FLOWFORGE_API_HOST": "127.0.0.1", "FLOWFORGE_API_PORT": str(api_port),
                     "FLOWFORGE_PREFECT_PORT": str(prefect_port)})
    try:
        wait_http(f"http://127.0.0.1:{api_port}/healthz", 180)
    except TimeoutError:
        pytest.fail(container.logs(tail=60).decode(errors="replace"))
    finally:
        container.remove(force=True)


def test_a_dockerd_restart_fails_the_job_clearly_and_leaves_no_container(
        docker_stack: Stack, dapi: httpx.Client) -> None:
    """The engine restarts under a running container job (its shutdown stops the container):
    the job fails naming the engine, its container is gone after, and the next container job
    runs (the worker's warm pool drops the stopped ones and refills)."""
    if os.environ.get("FLOWFORGE_TEST_DOCKER_HOST"):
        pytest.skip("an external engine is not this test's to restart")
    create_workflow(dapi, {"name": "engine-restart", "jobs": [
        {"name": "long", "runtime": "bash", "script": "echo started; sleep 120",
         "target": {"container": {}}}]})
    run_id = dapi.post("/workflows/engine-restart/runs", json={"inputs": {}}).json()["run_id"]
    wait_for_container(run_id)
    deadline = time.monotonic() + 60
    while not any("started" in line["message"]
                  for line in dapi.get(f"/runs/{run_id}/logs").json()):  # the job itself runs
        assert time.monotonic() < deadline, "the job never printed"
        time.sleep(0.3)
    restart_dockerd()
    run = wait_run(dapi, run_id, timeout=180)
    job = jobs_by_name(run)["long"]
    assert run["state"] == "FAILED" and job["state"] == "FAILED", run
    assert "Docker engine" in job["error"], job
    deadline = time.monotonic() + 30
    while job_containers(run_id) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert job_containers(run_id) == []
    create_workflow(dapi, {"name": "after-restart", "jobs": [
        {"name": "j", "runtime": "bash", "script": "echo fine", "target": {"container": {}}}]})
    assert run_workflow(dapi, "after-restart", timeout=120)["state"] == "COMPLETED"
