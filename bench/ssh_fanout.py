"""SSH fan-out: one job on 1, 4 and 16 sshd instances at once, against one server after another.

Run by hand (not in CI, needs root for the test login):
    .venv/bin/python bench/ssh_fanout.py [--reps 3] [--work 1.0] [--sizes 1,4,16]

Starts 16 real OpenSSH `sshd` instances on 127.0.0.1 ports (the test fixtures' set-up), then for
each size N measures, with a fresh `SshPool` each time so connecting is part of the figure (a run
opens one connection per server):

* fan-out: one `SshExecutor.run` on N servers (what a job with `servers: [N names]` does);
* warm: the same, as the second job of a run (connections already open);
* serial: N single-server runs one after another (the old design).

The job is a bash script that sources the helpers, sleeps `--work` seconds and writes an output,
so every step is real: mktemp, SFTP upload of the helpers, exec, SFTP read-back, rm. Prints the
median of `--reps` per cell and the ratios; the goal is fan-out(16) within 1.5x of fan-out(1).

`--through-runs` measures the same job inside real flow runs instead: one `flowforge up` (the
tests' `start_stack`), the servers registered through the API, a workflow per size whose one
job runs on that many servers; the figure is the job's own duration as the run records it
(`started_at` to `ended_at`), so the flow run's start is not in it. Goal (issue 19): N servers
within 1.3x of one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowforge.connectors.servers import MemoryDirectory
from flowforge.core.servers import Credential, ServerRecord
from flowforge.core.targets import SshTarget
from flowforge.runtime.executors.base import ScriptRequest
from flowforge.runtime.executors.ssh import SshExecutor, SshPool
from flowforge.runtime.settings import WorkerSettings as Settings
from tests.fixtures.sshd import USER, Sshd, ensure_user, keygen, start_sshd


def run_once(directory: MemoryDirectory, names: list[str], job: ScriptRequest,
             warm: bool = False) -> float:
    """One job on `names` with a new pool; `warm` times a second job on the same pool, whose
    connections are open already (every job of a run after the first)."""
    pool = SshPool(directory, Settings(ssh_connect_timeout=30))
    executor = SshExecutor(lambda: pool)
    target = SshTarget(servers=names)
    try:
        for _ in range(2 if warm else 1):
            started = time.perf_counter()
            result = executor.run(job, lambda s, line: None, target)
            elapsed = time.perf_counter() - started
            if result.error is not None:
                raise RuntimeError(result.error)
    finally:
        pool.close()
    return elapsed


def _seconds(job: dict[str, Any]) -> float:
    started = datetime.fromisoformat(job["started_at"].replace("Z", "+00:00"))
    ended = datetime.fromisoformat(job["ended_at"].replace("Z", "+00:00"))
    return (ended - started).total_seconds()


def through_runs(servers: list[Sshd], private_key: str, sizes: list[int], reps: int,
                 work: float) -> None:
    from tests.conftest import create_workflow, jobs_by_name, run_workflow, start_stack

    script = ('source "$FLOWFORGE_HELPERS/flowforge.sh"\n'
              f'sleep {work}\nff_output "{{\\"ok\\": true}}"\n')
    with tempfile.TemporaryDirectory() as home, start_stack(Path(home)) as stack, \
            stack.client() as api:
        for i, server in enumerate(servers):
            made = api.post("/servers", json={
                "name": f"s{i}", "host": "127.0.0.1", "port": server.port, "username": USER,
                "host_key": server.host_key, "private_key": private_key})
            assert made.status_code == 201, made.text
        for n in sizes:
            create_workflow(api, {"name": f"fan-{n}", "jobs": [
                {"name": "j", "runtime": "bash", "script": script,
                 "target": {"ssh": {"servers": [f"s{i}" for i in range(n)]}}}]})
        run_workflow(api, "fan-1")  # warm: caches, the worker's first fork
        rows = []
        for n in sizes:
            times = []
            for _ in range(reps):
                run = run_workflow(api, f"fan-{n}", timeout=300)
                assert run["state"] == "COMPLETED", run
                times.append(_seconds(jobs_by_name(run)["j"]))
            rows.append((n, statistics.median(times), min(times), max(times)))
    print(f"\njob through a flow run: sleep {work:g}s on each server; job start -> end as the run "
          f"records it; median of {reps}; load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'servers':>8} {'median s':>9} {'min':>6} {'max':>6} {'/ one server':>13}")
    for n, median, low, high in rows:
        print(f"{n:>8} {median:>9.2f} {low:>6.2f} {high:>6.2f} {median / rows[0][1]:>13.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", type=float, default=1.0)
    parser.add_argument("--sizes", default="1,4,16")
    parser.add_argument("--through-runs", action="store_true",
                        help="time the job inside flow runs of a real stack instead")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    ensure_user()
    base = Path(tempfile.mkdtemp(prefix="ff-bench-sshd-"))
    base.chmod(0o755)
    key = base / "client"
    public = keygen(key)
    servers: list[Sshd] = []
    try:
        directory = MemoryDirectory()
        for i in range(max(sizes)):
            server = start_sshd(base / f"s{i}", [public])
            servers.append(server)
            directory.add(ServerRecord(name=f"s{i}", host="127.0.0.1", port=server.port,
                                       username=USER, host_key=server.host_key),
                          Credential(private_key=key.read_text()))
        if args.through_runs:
            through_runs(servers, key.read_text(), sizes, args.reps, args.work)
            return
        job = ScriptRequest(name="bench", runtime="bash",
                        script='source "$FLOWFORGE_HELPERS/flowforge.sh"\n'
                               f'sleep {args.work}\nff_output "{{\\"ok\\": true}}"\n')
        run_once(directory, ["s0"], job)  # warm caches (sshd binary, bash, page cache)
        rows = []
        for n in sizes:
            names = [f"s{i}" for i in range(n)]
            fan = statistics.median(run_once(directory, names, job) for _ in range(args.reps))
            warm = statistics.median(run_once(directory, names, job, warm=True)
                                     for _ in range(args.reps))
            serial = statistics.median(sum(run_once(directory, [name], job) for name in names)
                                       for _ in range(args.reps))
            rows.append((n, fan, warm, serial))
        one, one_warm = rows[0][1], rows[0][2]
        print(f"job: sleep {args.work:g}s on each server; median of {args.reps}; load average "
              f"{os.getloadavg()[0]:.1f} at the end")
        print(f"{'servers':>8} {'fan-out s':>10} {'warm s':>7} {'serial s':>9} "
              f"{'fan/fan(1)':>11} {'warm/warm(1)':>13} {'serial/fan':>11}")
        for n, fan, warm, serial in rows:
            print(f"{n:>8} {fan:>10.2f} {warm:>7.2f} {serial:>9.2f} {fan / one:>11.2f} "
                  f"{warm / one_warm:>13.2f} {serial / fan:>11.2f}")
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
