"""The warm runner's pieces that need no Prefect server: the fast flow load's guard, the TLS
context pool, the settings check, the environment a run gets, the supervisor's run markers."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from uuid import uuid4

import pytest

from flowforge.runtime import warmstart
from flowforge.stack import orphans
from flowforge.stack.runner.forking import ForkStarter, fork_context, run_environment


def test_only_a_lone_set_working_directory_step_takes_the_fast_load() -> None:
    step = "prefect.deployments.steps.set_working_directory"
    assert warmstart._working_directory([{step: {"directory": "/srv/project"}}]) == "/srv/project"
    assert warmstart._working_directory(None) is None
    assert warmstart._working_directory([]) is None
    assert warmstart._working_directory([{step: {"directory": "/a"}}, {step: {"directory": "/b"}}]) is None
    assert warmstart._working_directory([{"prefect.deployments.steps.git_clone": {}}]) is None
    assert warmstart._working_directory([{step: {"directory": "{{ clone.directory }}"}}]) is None


def test_each_tls_context_from_the_pool_goes_to_one_caller_untouched() -> None:
    assert warmstart._tls_cafile is not None
    pool_before = list(warmstart._tls_pool)
    try:
        first = warmstart._default_context(cafile=warmstart._tls_cafile)
        second = warmstart._default_context(cafile=warmstart._tls_cafile)
        assert first is not second
        assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname
        first.check_hostname = False  # a caller may change its own; the next is unaffected
        first.verify_mode = ssl.CERT_NONE
        third = warmstart._default_context(cafile=warmstart._tls_cafile)
        assert third.verify_mode == ssl.CERT_REQUIRED and third.check_hostname
        # Other arguments are never served from the pool.
        left = len(warmstart._tls_pool)
        other = warmstart._default_context()
        assert other not in pool_before and len(warmstart._tls_pool) == left
        while warmstart._tls_pool:
            warmstart._default_context(cafile=warmstart._tls_cafile)
        fresh = warmstart._default_context(cafile=warmstart._tls_cafile)  # empty: built anew
        assert fresh.verify_mode == ssl.CERT_REQUIRED
    finally:
        warmstart._tls_pool[:] = pool_before


def test_settings_are_read_again_only_when_the_runs_prefect_settings_differ() -> None:
    base = {"PREFECT_API_URL": "http://127.0.0.1:4200/api", "HOME": "/root"}
    same = {**base, "PREFECT__FLOW_RUN_ID": "x", "PATH": "/bin"}
    assert warmstart._prefect_settings(base) == warmstart._prefect_settings(same)
    other = {**base, "PREFECT_LOGGING_LEVEL": "DEBUG"}
    assert warmstart._prefect_settings(base) != warmstart._prefect_settings(other)


def test_a_runs_environment_is_prefects_with_the_pools_env_and_its_ids(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_WORKER", "1")
    monkeypatch.setenv("OVERRIDDEN", "worker")
    flow_run = SimpleNamespace(id=uuid4())
    env = run_environment(flow_run,  # type: ignore[arg-type]
                          {"OVERRIDDEN": "pool", "DROPPED": None},
                          {"PREFECT__CONTROL_PORT": "1234"})
    assert env["FROM_WORKER"] == "1" and env["OVERRIDDEN"] == "pool"
    assert "DROPPED" not in env
    assert env["PREFECT__FLOW_RUN_ID"] == str(flow_run.id)
    assert env["PREFECT__CONTROL_PORT"] == "1234"
    assert env["PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS"] == "false"


def test_the_supervisor_names_a_forked_runs_flow_run_by_its_marker(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert orphans.flow_run_of(child.pid) is None  # nothing in its environment
        assert orphans.flow_run_of(child.pid, tmp_path) is None  # and no marker
        (tmp_path / str(child.pid)).write_text("0b7f9a1e-run\n")
        assert orphans.flow_run_of(child.pid, tmp_path) == "0b7f9a1e-run"
    finally:
        child.kill()
        child.wait()


def test_the_starter_marks_its_child_while_it_runs_and_removes_the_mark(tmp_path: Path) -> None:
    import anyio

    markers = tmp_path / "markers"
    seen: dict[str, str] = {}
    starter = ForkStarter(ctx=fork_context(), cwd=tmp_path, env={}, control_channel=None,
                          markers=markers)
    flow_run = SimpleNamespace(id=uuid4())

    async def go() -> None:
        async with anyio.create_task_group() as group:
            handle = await group.start(starter.start, flow_run)
            mark = markers / str(handle.pid)
            seen["mark"] = mark.read_text()
            assert os.getpgid(handle.pid) == handle.pid  # its own session, killable as a group
            handle.hard_kill()
        seen["after"] = str(mark.exists())
        seen["code"] = str(handle.returncode)

    started = time.monotonic()
    anyio.run(go)
    assert seen["mark"] == str(flow_run.id)
    assert seen["after"] == "False"
    assert seen["code"] == "-9"  # the exit code comes through the fork server
    assert time.monotonic() - started < 60


def test_an_unknown_runner_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flowforge.cli import app

    result = CliRunner().invoke(app, ["up", "--home", str(tmp_path), "--runner", "bogus"])
    assert result.exit_code == 1, result.output
    assert "runner (--runner or FLOWFORGE_RUNNER): Input should be 'warm' or 'process'" \
        in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # nothing started
