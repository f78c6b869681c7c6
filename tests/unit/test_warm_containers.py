"""The flow run's side of pre-warmed containers, without Docker: option-set keys, owners,
claims over a real Unix socket, the FIFO hand-off to a real waiter process, and run lookup.

The Docker side (the pool, hardening, draining, reaping) is in
tests/integration/test_container.py."""

from __future__ import annotations

import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from flowforge.core.targets import ContainerTarget
from flowforge.runtime.executors import warm_containers as warm


def test_the_key_is_what_a_container_is_created_with() -> None:
    base = warm.pool_key(ContainerTarget())
    assert base["image"].startswith("flowforge-runner:")  # the default image, named
    # The job's own environment and timeout are given at start: same set.
    same = ContainerTarget(env={"A": "1"}, timeout=5)
    assert warm.key_id(warm.pool_key(same)) == warm.key_id(base)
    for other in (ContainerTarget(memory="128m"), ContainerTarget(user="1000"),
                  ContainerTarget(image="alpine:3"), ContainerTarget(read_only=False),
                  ContainerTarget(pids_limit=64), ContainerTarget(cpus=0.5)):
        assert warm.key_id(warm.pool_key(other)) != warm.key_id(base), other


def test_owners_are_alive_while_their_process_is() -> None:
    assert warm.owner_alive(warm.owner_id())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = warm.owner_id(child.pid)
    child.wait()
    assert not warm.owner_alive(owner)  # gone (a new process with its PID has another start)
    assert not warm.owner_alive(f"{socket.gethostname()}:{os.getpid()}:1")  # PID reused
    assert warm.owner_alive("another-host:1:1")  # not this reaper's to judge
    assert warm.owner_alive("garbage")


def test_a_container_names_its_run_by_label_or_claim(tmp_path: Path) -> None:
    labelled = SimpleNamespace(labels={"flowforge.run-id": "r1"})
    assert warm.run_of(labelled, "flowforge.run-id") == "r1"
    unclaimed = SimpleNamespace(labels={warm.LABEL_DIR: str(tmp_path)})
    assert warm.run_of(unclaimed, "flowforge.run-id") is None
    (tmp_path / warm.CLAIM_FILE).write_text("r2")
    assert warm.run_of(unclaimed, "flowforge.run-id") == "r2"
    assert warm.run_of(SimpleNamespace(labels={}), "flowforge.run-id") is None


@pytest.fixture
def pool_socket(tmp_path: Path) -> Iterator[tuple[Path, list[dict[str, object]]]]:
    """A Unix socket answering claims as the pool does: a container for the default set only."""
    path = tmp_path / "pool.sock"
    seen: list[dict[str, object]] = []
    default = warm.key_id(warm.pool_key(ContainerTarget()))

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            request = json.loads(self.rfile.readline())
            seen.append(request)
            ok = warm.key_id(request["key"]) == default
            answer = {"id": "c0ffee", "dir": str(tmp_path)} if ok else {"id": None}
            self.wfile.write(json.dumps(answer).encode() + b"\n")

    server = socketserver.UnixStreamServer(str(path), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path, seen
    server.shutdown()
    server.server_close()


def test_claims_go_over_the_socket(pool_socket: tuple[Path, list[dict[str, object]]],
                                   tmp_path: Path) -> None:
    path, seen = pool_socket
    got = warm.claim(path, ContainerTarget(env={"SECRET": "s"}), "run-1")
    assert got == warm.Claimed("c0ffee", tmp_path) and got.job_dir == tmp_path / "job"
    assert seen[0]["run_id"] == "run-1"
    assert "env" not in seen[0]["key"]  # type: ignore[operator]  # a job's env never goes to the pool
    assert warm.claim(path, ContainerTarget(memory="64m"), "run-1") is None  # none of that set
    assert warm.claim(tmp_path / "absent.sock", ContainerTarget(), "run-1") is None  # no pool


def waiter_in(directory: Path) -> tuple[Path, list[str]]:
    """A warm container's job directory under `directory` (its FIFO made), and the waiter's
    real command reading that FIFO, with this interpreter as its python3."""
    job_dir = directory / "job"
    job_dir.mkdir()
    fifo = job_dir / warm.START_FIFO
    os.mkfifo(fifo)
    argv = warm.waiter_argv()
    argv[0], argv[-1] = sys.executable, str(fifo)
    return fifo, argv


def test_the_waiter_runs_the_job_with_its_env_from_the_fifo(tmp_path: Path) -> None:
    """The real waiter code in a real process: it blocks on the FIFO, then execs the job."""
    fifo, argv = waiter_in(tmp_path)
    waiter = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={"PATH": os.environ["PATH"], "FROM_IMAGE": "kept"})
    claimed = warm.Claimed("c", tmp_path)
    assert warm.start(claimed, ["sh", "-c", 'echo "$JOB_VALUE $FROM_IMAGE"; exit 3'],
                      {"JOB_VALUE": "a b; $(rm -rf /)"})
    out, err = waiter.communicate(timeout=10)
    assert waiter.returncode == 3, err
    assert out == "a b; $(rm -rf /) kept\n"  # data, never shell text
    assert not fifo.exists()  # the job never sees it


def test_a_missing_runtime_is_a_clear_error(tmp_path: Path) -> None:
    _, argv = waiter_in(tmp_path)
    waiter = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    assert warm.start(warm.Claimed("c", tmp_path), ["no-such-runtime"], {})
    _, err = waiter.communicate(timeout=10)
    assert waiter.returncode == 127 and "cannot run no-such-runtime" in err


def test_start_gives_up_when_no_waiter_reads(tmp_path: Path) -> None:
    (tmp_path / "job").mkdir()
    os.mkfifo(tmp_path / "job" / warm.START_FIFO)
    started = time.monotonic()
    assert not warm.start(warm.Claimed("c", tmp_path), ["true"], {})  # the container died
    assert time.monotonic() - started < warm.START_WAIT + 2  # never a hang
