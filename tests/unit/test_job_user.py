"""Local jobs under a root worker run as the job user (`nobody`), and are not a way in.

The attacks of a script on its worker, tried for real: reading the worker's and the launcher's
environment, the worker's files, and handing back a link or a FIFO as its output.
"""

from __future__ import annotations

import os
import pwd
import sys
from pathlib import Path

import pytest

from flowforge.runtime.executors import jobuser
from flowforge.runtime.executors.base import ScriptRequest
from flowforge.runtime.executors.launcher import LauncherExecutor
from flowforge.runtime.executors.local import LocalExecutor
from tests.unit.test_local_executor import EVENT, INPUT, Log, Make

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

NOBODY = pwd.getpwnam("nobody")


@pytest.fixture(params=["in-process", "launcher"])
def make(request: pytest.FixtureRequest) -> Make:
    return LocalExecutor if request.param == "in-process" else LauncherExecutor


def run(executor: LocalExecutor, runtime: str, script: str, **kwargs: object) -> tuple[object, Log]:
    log = Log()
    job = ScriptRequest(name="job", runtime=runtime, script=script, input=INPUT, event=EVENT,
                        **kwargs)  # type: ignore[arg-type]
    return executor.run(job, log), log


def test_a_root_worker_runs_jobs_as_nobody_by_default() -> None:
    assert jobuser.resolve(None, euid=0) == jobuser.JobUser(
        NOBODY.pw_uid, NOBODY.pw_gid, "nobody", NOBODY.pw_dir)
    assert jobuser.resolve(None, euid=1000) is None  # not root: cannot switch, stays itself
    assert jobuser.resolve("", euid=0) is None  # asked to stay root
    assert jobuser.resolve("root", euid=0) is None
    with pytest.raises(ValueError, match="no user 'no-such-user'"):
        jobuser.resolve("no-such-user", euid=0)
    with pytest.raises(ValueError, match="only a worker running as root"):
        jobuser.resolve("nobody", euid=1000)


def test_the_job_runs_as_nobody_in_its_own_directory(make: Make) -> None:
    result, log = run(make(), "bash", 'id -u; id -g; echo "$HOME"; touch here; ff() { :; }\n'
                      'source "$FLOWFORGE_HELPERS/flowforge.sh"; ff_output \'{"ok": 1}\'')
    assert result.error is None, result.error  # type: ignore[attr-defined]
    uid, gid, home = log.text("stdout")
    assert (int(uid), int(gid)) == (NOBODY.pw_uid, NOBODY.pw_gid)
    assert home.startswith(str(Path(os.environ.get("TMPDIR", "/tmp"))))  # its job directory
    assert result.output == {"ok": 1}  # type: ignore[attr-defined]


def test_python_jobs_work_when_the_worker_interpreter_is_out_of_reach(make: Make) -> None:
    """The worker's virtualenv may live under a private home (/root): python3 from PATH then,
    and the helpers copied into the job directory."""
    result, log = run(make(), "python", "import os, flowforge_helpers as ff\n"
                      "print(os.getuid())\nff.output({'py': True})")
    assert result.error is None, result.error  # type: ignore[attr-defined]
    assert log.text("stdout") == [str(NOBODY.pw_uid)]
    assert result.output == {"py": True}  # type: ignore[attr-defined]
    reachable = jobuser.resolve(None, euid=0).can_reach(sys.executable, os.X_OK)  # type: ignore[union-attr]
    assert isinstance(reachable, bool)


def test_the_worker_and_launcher_environment_and_files_are_out_of_reach(
        make: Make, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "flowforge:s3cret-credential")
    monkeypatch.setenv("FLOWFORGE_API_KEY_SECRET", "ffk_not_for_jobs")
    private = tmp_path / "private"
    private.write_text("worker-only")
    private.chmod(0o600)
    script = (f'env; cat /proc/$PPID/environ 2>&1 | tr "\\0" "\\n"; cat {private} 2>&1; '
              'cat /proc/1/environ 2>&1; true')
    result, log = run(make(), "bash", script)
    assert result.error is None, result.error  # type: ignore[attr-defined]
    text = "\n".join(log.text("stdout"))
    assert "s3cret-credential" not in text and "ffk_not_for_jobs" not in text
    assert "worker-only" not in text and "Permission denied" in text
    names = {line.split("=", 1)[0] for line in log.text("stdout") if "=" in line}
    leaked = {n for n in names if n.startswith("PREFECT_")
              or (n.startswith("FLOWFORGE_") and not n.startswith(("FLOWFORGE_JOB_",
                                                                  "FLOWFORGE_HELPERS")))}
    assert not leaked


@pytest.mark.parametrize("trap", ["ln -s {private} output.json", "mkfifo output.json",
                                  "ln -s /dev/zero output.json"])
def test_a_result_file_is_read_as_a_plain_file_or_not_at_all(make: Make, tmp_path: Path,
                                                              trap: str) -> None:
    private = tmp_path / "secret.json"
    private.write_text('{"secret": "worker-only"}')
    private.chmod(0o600)
    result, _ = run(make(), "bash", trap.format(private=private))
    assert result.output is None  # type: ignore[attr-defined]
    assert "output.json" in (result.error or "")  # type: ignore[attr-defined]


def test_an_unreachable_job_root_is_a_clear_job_error(make: Make, tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    result, _ = run(make(), "bash", "true", work_root=private / "jobs")
    assert "cannot reach the job directory" in (result.error or "")  # type: ignore[attr-defined]
    assert "FLOWFORGE_JOB_ROOT" in result.error  # type: ignore[attr-defined]


def test_the_worker_user_on_request(make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    result, log = run(make(user=None), "bash", "id -u")
    assert log.text("stdout") == ["0"], result
