"""The local executor, the job-directory protocol and the helpers, with the real interpreters.

Nothing is mocked: every test runs bash, python or node as a job would, and checks what came
back through the files of the protocol and the log callback.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flowforge.runtime.executors import processes, workdir
from flowforge.runtime.executors.base import ScriptRequest, ScriptResult
from flowforge.runtime.executors.launcher import LauncherExecutor
from flowforge.runtime.executors.local import LocalExecutor

INPUT = {
    "inputs": {"depth": "basic"},
    "params": {"rows": 3, "name": "é ünïcode"},
    "jobs": {"extract": {"state": "COMPLETED", "output": {"n": 1}, "condition": None}},
    "item": {"id": 7},
    "trigger": {"type": "manual"},
}
EVENT = {"workflow": "wf", "job": "j", "run_id": "r1", "trigger": {"type": "manual"}, "attempt": 1,
         "item": {"id": 7}}


class Log:
    """A log callback that remembers each line with the time it arrived."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str, str]] = []

    def __call__(self, stream: str, line: str) -> None:
        self.lines.append((time.monotonic(), stream, line))

    def text(self, stream: str) -> list[str]:
        return [line for _, s, line in self.lines if s == stream]


Executor = LocalExecutor  # or its LauncherExecutor subclass
#: Every behaviour holds for the executor in this process and for it in the launcher process,
#: which is how flow runs use it.
EXECUTORS: dict[str, Callable[..., Executor]] = {"in-process": LocalExecutor,
                                                 "launcher": LauncherExecutor}


Make = Callable[..., Executor]


@pytest.fixture(params=list(EXECUTORS))
def make(request: pytest.FixtureRequest) -> Make:
    return EXECUTORS[request.param]


def run(executor: Executor, runtime: str, script: str, **kwargs: Any) -> tuple[ScriptResult, Log]:
    log = Log()
    kwargs.setdefault("input", INPUT)
    kwargs.setdefault("event", EVENT)
    job = ScriptRequest(name="test job", runtime=runtime, script=script, **kwargs)  # type: ignore[arg-type]
    return executor.run(job, log), log


def running(pid: int) -> bool:
    """Alive and not a zombie (PID 1 here may never reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone before or while it was read
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# -- helpers round trip, one per language ------------------------------------------------------

PYTHON_SCRIPT = """
import flowforge_helpers as ff
data = ff.input()
print("rows", data["params"]["rows"], "item", data["item"]["id"], "name", data["params"]["name"])
assert ff.event()["attempt"] == 1
assert ff.get_variable("counter") == 1 and ff.get_variable("missing", "dflt") == "dflt"
ff.set_variable("counter", 2)
ff.set_variable("tags", ["a", "b"])
assert ff.get_variable("counter") == 2
ff.output({"first": True})
ff.output({"rows": data["params"]["rows"] * 2, "upstream": data["jobs"]["extract"]["output"]})
ff.set_condition(False)
ff.progress(50.0, "half way")
errors = []
for call in (lambda: ff.output(object()), lambda: ff.output(float("nan")), lambda: ff.set_condition("yes"),
             lambda: ff.progress(101), lambda: ff.progress(True), lambda: ff.set_variable("", 1)):
    try:
        call()
    except (TypeError, ValueError) as exc:
        errors.append(str(exc))
print(len(errors), "rejected:", "; ".join(errors))
"""

NODE_SCRIPT = """
const ff = require("flowforge");
const data = ff.input();
console.log("rows", data.params.rows, "item", data.item.id, "name", data.params.name);
if (ff.event().attempt !== 1) throw new Error("event");
if (ff.getVariable("counter") !== 1 || ff.get_variable("missing", "dflt") !== "dflt") throw new Error("vars");
ff.setVariable("counter", 2);
ff.set_variable("tags", ["a", "b"]);
if (ff.get_variable("counter") !== 2) throw new Error("own set");
ff.output({first: true});
ff.output({rows: data.params.rows * 2, upstream: data.jobs.extract.output});
ff.setCondition(false);
ff.progress(50, "half way");
const errors = [];
for (const call of [() => ff.output(() => 1), () => ff.output(NaN), () => ff.set_condition("yes"),
                    () => ff.progress(101), () => ff.progress(true), () => ff.set_variable("", 1)]) {
  try { call(); } catch (e) { errors.push(e.message); }
}
console.log(errors.length, "rejected:", errors.join("; "));
"""

BASH_SCRIPT = """
set -euo pipefail
source "$FLOWFORGE_HELPERS/flowforge.sh"
rows=$(ff_input | python3 -c 'import json,sys; print(json.load(sys.stdin)["params"]["rows"])')
item=$(ff_input | python3 -c 'import json,sys; print(json.load(sys.stdin)["item"]["id"])')
name=$(ff_input | python3 -c 'import json,sys; print(json.load(sys.stdin)["params"]["name"])')
echo "rows $rows item $item name $name"
ff_event | grep -q '"attempt": 1'
[[ $(ff_get_variable counter) == 1 && $(ff_get_variable missing '"dflt"') == '"dflt"' ]]
ff_set_variable counter 2
ff_set_variable tags '["a",
  "b"]'
[[ $(ff_get_variable counter) == 2 ]]
ff_output '{"first": true}'
ff_output "{\\"rows\\": $((rows * 2)), \\"upstream\\": {\\"n\\": 1}}"
ff_set_condition false
ff_progress 50 half way
errors=0
ff_output '{not json' 2>/dev/null || errors=$((errors + 1))
ff_output NaN 2>/dev/null || errors=$((errors + 1))
ff_set_condition yes 2>/dev/null || errors=$((errors + 1))
ff_progress 101 2>/dev/null || errors=$((errors + 1))
ff_progress true 2>/dev/null || errors=$((errors + 1))
ff_set_variable '' 1 2>/dev/null || errors=$((errors + 1))
echo "$errors rejected: $(ff_set_condition yes 2>&1)"
"""


@pytest.mark.parametrize(("runtime", "script"), [("python", PYTHON_SCRIPT), ("node", NODE_SCRIPT),
                                                 ("bash", BASH_SCRIPT)])
def test_helpers_round_trip(runtime: str, script: str, make: Make) -> None:
    result, log = run(make(), runtime, script, variables={"counter": 1})

    assert result.error is None, log.lines
    assert result.exit_code == 0
    assert log.text("stdout")[0] == "rows 3 item 7 name é ünïcode"
    assert log.text("stdout")[1].startswith("6 rejected: ")
    assert "set_condition" in log.text("stdout")[1]
    assert "[progress 50%] half way" in log.text("stderr")
    assert result.output == {"rows": 6, "upstream": {"n": 1}}  # the second output() replaced the first
    assert result.condition is False
    assert result.variables_set == {"counter": 2, "tags": ["a", "b"]}
    assert result.progress == {"pct": 50, "message": "half way"}
    assert result.timed_out is False


def test_no_output_means_none_and_bash_helpers_need_no_json_tool(tmp_path: Path, make: Make) -> None:
    """Writing helpers work with bash and coreutils alone (no python3, node or jq on PATH)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "cat", "mv"):
        (bin_dir / tool).symlink_to(Path("/usr/bin") / tool)
    script = ('source "$FLOWFORGE_HELPERS/flowforge.sh"\n'
              'ff_output \'{"ok": true}\'; ff_set_condition true; ff_set_variable "k \\"q\\"" \'"v"\'\n'
              'ff_progress 99.50 "tab\there"\n')
    result, _ = run(make(base_env={"PATH": str(bin_dir)}), "bash", script, env={})
    assert result.error is None
    assert (result.output, result.condition) == ({"ok": True}, True)
    assert result.variables_set == {'k "q"': "v"}
    assert result.progress == {"pct": 99.5, "message": "tab\there"}

    result, _ = run(make(), "python", "print('nothing')")
    assert (result.error, result.output, result.condition, result.progress) == (None, None, None, None)


# -- data stays data ---------------------------------------------------------------------------

def test_env_and_input_values_reach_bash_as_inert_text(shared_dir: Path, make: Make) -> None:
    marker = shared_dir / "pwned"
    values = {
        "SUBST": f"$(touch {marker})",
        "BACKTICK": f"`touch {marker}`",
        "QUOTES": f"\"'; touch {marker}; echo '\"",
        "NEWLINES": f"line1\ntouch {marker}\nline3",
    }
    script = ('source "$FLOWFORGE_HELPERS/flowforge.sh"\n'
              'for name in SUBST BACKTICK QUOTES NEWLINES; do printf "%s" "${!name}" | base64 -w0; echo; done\n'
              'echo $SUBST $BACKTICK $QUOTES $NEWLINES >/dev/null\n'
              'ff_input >/dev/null\n')
    result, log = run(make(), "bash", script, env=values, input={"params": values})

    assert result.error is None, log.lines
    decoded = [base64.b64decode(line).decode() for line in log.text("stdout")]
    assert decoded == list(values.values())
    assert not marker.exists()


def test_prefect_and_flowforge_variables_do_not_reach_the_script(monkeypatch: pytest.MonkeyPatch, make: Make) -> None:
    monkeypatch.setenv("PREFECT_API_KEY", "secret-key")
    monkeypatch.setenv("FLOWFORGE_SECRET", "secret-2")
    monkeypatch.setenv("KEEP_ME", "visible")
    result, log = run(make(), "bash", "env", env={"JOB_VAR": "mine", "FLOWFORGE_JOB_DIR": "/elsewhere"})

    assert result.error is None
    names = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in log.text("stdout") if "=" in line}
    assert not [n for n in names if n.startswith("PREFECT_")]
    assert {n for n in names if n.startswith("FLOWFORGE_")} == {"FLOWFORGE_JOB_DIR", "FLOWFORGE_HELPERS"}
    assert names["FLOWFORGE_JOB_DIR"] != "/elsewhere"  # a job cannot point the helpers elsewhere
    assert (names["KEEP_ME"], names["JOB_VAR"]) == ("visible", "mine")
    assert "secret-key" not in "\n".join(log.text("stdout"))


# -- streaming and failures --------------------------------------------------------------------

@pytest.mark.parametrize(("runtime", "script"), [
    ("bash", "echo first; sleep 1; echo second; printf 'no newline'"),
    ("python", "import time\nprint('first')\ntime.sleep(1)\nprint('second')\nprint('no newline', end='')"),
])
def test_lines_are_logged_while_the_process_runs(runtime: str, script: str, make: Make) -> None:
    started = time.monotonic()
    result, log = run(make(), runtime, script)
    ended = started + result.duration

    assert result.error is None
    assert log.text("stdout") == ["first", "second", "no newline"]
    first_at = log.lines[0][0]
    assert ended - first_at > 0.7, "the first line only arrived when the process ended"


def test_non_zero_exit_reports_the_stderr_tail(make: Make) -> None:
    result, log = run(make(), "bash", "for i in $(seq 1 30); do echo \"err $i\" >&2; done; echo out; exit 3")

    assert result.exit_code == 3
    assert result.error is not None and result.error.startswith("exit code 3: err 11\n")
    assert result.error.endswith("err 30")
    assert "err 10\n" not in result.error
    assert len(log.text("stderr")) == 30

    result, _ = run(make(), "bash", "exit 4")
    assert result.error == "exit code 4"

    result, _ = run(make(), "python", "raise SystemExit('bad input')")
    assert result.error == "exit code 1: bad input"


def test_killed_by_signal_names_it(make: Make) -> None:
    result, _ = run(make(), "bash", "kill -KILL $$")
    assert result.exit_code == -signal.SIGKILL
    assert result.error == "killed by SIGKILL"


def test_timeout_kills_the_whole_process_group(shared_dir: Path, make: Make) -> None:
    pids = shared_dir / "pids"
    script = (f"sleep 100 & echo $! >> {pids}\n"
              f"bash -c 'sleep 100' & echo $! >> {pids}\n"
              "echo started\nsleep 100\n")
    result, log = run(make(), "bash", script, timeout=1)

    assert result.timed_out is True
    assert result.error == "timed out after 1s"
    assert result.duration < 3
    assert log.text("stdout") == ["started"]
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 2
    assert not [pid for pid in children if running(pid)]
    assert processes.live() == []


def test_timeout_escalates_to_sigkill_when_sigterm_is_ignored(shared_dir: Path, make: Make) -> None:
    pids = shared_dir / "pids"
    script = f"trap '' TERM\nsleep 100 & echo $! > {pids}\nwhile true; do sleep 0.1; done\n"
    result, _ = run(make(kill_grace=0.5), "bash", script, timeout=0.5)

    assert (result.timed_out, result.error) == (True, "timed out after 0.5s")
    assert 0.9 < result.duration < 2.5
    assert not running(int(pids.read_text()))


def test_background_children_do_not_outlive_a_finished_job(shared_dir: Path, make: Make) -> None:
    pids = shared_dir / "pids"
    result, _ = run(make(), "bash", f"sleep 100 & echo $! > {pids}\necho done")

    assert result.error is None
    assert result.duration < 2
    assert not running(int(pids.read_text()))


def test_a_failing_log_callback_still_kills_the_job(shared_dir: Path, make: Make) -> None:
    pids = shared_dir / "pids"

    def log(stream: str, line: str) -> None:
        raise RuntimeError("logger broke")

    job = ScriptRequest(name="j", runtime="bash", script=f"sleep 100 & echo $! > {pids}\necho x\nsleep 100")
    with pytest.raises(RuntimeError, match="logger broke"):
        make().run(job, log)

    # SIGKILL has been sent to the group; under load the kernel may take a moment to end it
    pid = int(pids.read_text())
    deadline = time.monotonic() + 2
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not running(pid)
    assert processes.live() == []


def test_malformed_files_written_by_the_script_are_reported(make: Make) -> None:
    script = ("import os\nd = os.environ['FLOWFORGE_JOB_DIR']\n"
              "open(os.path.join(d, 'output.json'), 'w').write('{bad')\n"
              "open(os.path.join(d, 'condition.json'), 'w').write('\"yes\"')\n"
              "open(os.path.join(d, 'progress.json'), 'w').write('garbage')\n")
    result, _ = run(make(), "python", script)

    assert result.exit_code == 0
    assert result.error is not None
    assert result.error.startswith("output.json is not valid JSON: ")
    assert 'condition.json must be true or false, got "yes"' in result.error
    assert (result.output, result.condition, result.progress) == (None, None, None)


def test_a_missing_interpreter_is_a_clear_error(make: Make) -> None:
    result, log = run(make(), "node", "console.log(1)", env={"PATH": "/nonexistent"})

    assert result.exit_code is None
    assert result.error is not None and "'node' was not found" in result.error
    assert log.lines == []


def test_bad_job_data_fails_before_anything_runs(make: Make) -> None:
    result, _ = run(make(), "python", "print(1)", input={"x": object()})
    assert result.error is not None and "input is not JSON-serialisable" in result.error

    result, _ = run(make(), "bash", "true", env={"BAD=NAME": "x"})
    assert result.error is not None and "invalid variable name" in result.error

    result, _ = run(make(), "bash", "true", env={"N": object()})
    assert result.error is not None and "job env: " in result.error and "must be a string" in result.error


def test_job_dir_holds_the_job_and_is_removed_unless_kept(tmp_path: Path, make: Make) -> None:
    """A local job reads the installed helpers (no per-job copies: they were a tenth of a
    10,000-item for-each's system time) and gets no variables.json when it reads no variables."""
    result, log = run(make(keep_dirs=True), "bash", 'echo "$FLOWFORGE_HELPERS"; pwd',
                      work_root=tmp_path / "work")
    assert result.job_dir is not None and result.job_dir.parent == tmp_path / "work"
    assert log.text("stdout")[0] == str(workdir.HELPERS_SOURCE)
    assert sorted(p.name for p in result.job_dir.iterdir()) == ["event.json", "input.json", "script.sh"]
    assert json.loads((result.job_dir / "input.json").read_text()) == INPUT
    assert (result.job_dir / "script.sh").read_text() == 'echo "$FLOWFORGE_HELPERS"; pwd\n'

    result, log = run(make(), "bash", "pwd", work_root=tmp_path / "work2")
    assert result.job_dir is None
    assert not Path(log.text("stdout")[0]).exists()


def test_a_job_that_leaves_a_tree_is_cleaned_up_and_stdin_is_empty(tmp_path: Path, make: Make) -> None:
    """Removal unlinks the listed files without a walk; a subdirectory falls back to rmtree.
    Every job reads end-of-file on stdin (one shared /dev/null descriptor)."""
    script = "mkdir -p deep/er && echo x > deep/er/f && ln -s / root-link\ncat; echo read-$?"
    result, log = run(make(), "bash", script, work_root=tmp_path)
    assert result.error is None and log.text("stdout") == ["read-0"]
    assert list(tmp_path.iterdir()) == []
    assert Path("/bin").exists()  # the symlink went, not what it points at


def test_a_job_that_closes_its_output_and_keeps_running_is_still_supervised(tmp_path: Path, make: Make) -> None:
    """With both pipes closed the executor waits on the process itself: to its end, or until
    its timeout, or until the run is stopped (`processes.kill_all` from another thread)."""
    started = time.monotonic()
    result, log = run(make(), "bash", "echo before\nexec >&- 2>&-\nsleep 0.5")
    assert result.error is None and log.text("stdout") == ["before"]
    assert 0.5 <= time.monotonic() - started < 5

    result, _ = run(make(), "bash", "exec >&- 2>&-\nsleep 100", timeout=0.5)
    assert result.timed_out and result.error == "timed out after 0.5s"

    import threading

    stopper = threading.Timer(0.5, processes.kill_all, kwargs={"grace": 0.5})
    stopper.start()
    started = time.monotonic()
    result, _ = run(make(), "bash", "exec >&- 2>&-\nsleep 100")
    stopper.join()
    assert result.error == "killed by SIGTERM" and time.monotonic() - started < 10


def test_collect_and_remove_use_a_listing_they_are_given(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    (job / "output.json").write_text("[1]")
    (job / "condition.json").write_text("true")
    names = workdir.listing(job)
    assert names is not None and sorted(names) == ["condition.json", "output.json"]
    # The listing decides what is read: a file written after it is not looked for.
    (job / "progress.json").write_text('{"pct": 5}')
    artifacts = workdir.collect(job, names)
    assert (artifacts.output, artifacts.condition, artifacts.progress) == ([1], True, None)
    assert workdir.collect(job).progress == {"pct": 5, "message": ""}
    # A stale listing still removes everything (rmdir fails, rmtree finishes).
    workdir.remove(job, names)
    assert not job.exists()
    workdir.remove(job)  # already gone: nothing to do
    assert workdir.listing(job) is None
    assert workdir.collect(job).error == "the job directory could not be read"


def test_prepare_for_remote_executors_copies_the_helpers(tmp_path: Path) -> None:
    """Containers and SSH servers cannot see the installed helpers: the directory carries
    copies, and the variables the job may read."""
    script = workdir.prepare(tmp_path, input={}, variables={"k": [1]}, event={}, script="true",
                             runtime="bash")
    assert script == tmp_path / "script.sh"
    assert sorted(p.name for p in (tmp_path / "_helpers").iterdir()) == sorted(workdir.HELPER_FILES)
    assert json.loads((tmp_path / "variables.json").read_text()) == {"k": [1]}


def test_pre_encoded_parts_make_the_same_input_json(tmp_path: Path) -> None:
    """What for-each items share is encoded once; the file they read is the same JSON."""
    shared = {key: workdir.encode(INPUT[key], "input") for key in ("inputs", "jobs", "trigger")}
    mixed = {"inputs": shared["inputs"], "params": INPUT["params"], "jobs": shared["jobs"],
             "item": INPUT["item"], "trigger": shared["trigger"]}
    workdir.prepare(tmp_path / "a", input=mixed, variables={}, event={}, script="", runtime="bash")
    workdir.prepare(tmp_path / "b", input=INPUT, variables={}, event={}, script="", runtime="bash")
    text = (tmp_path / "a" / "input.json").read_text()
    assert json.loads(text) == INPUT and list(json.loads(text)) == list(INPUT)
    assert text == (tmp_path / "b" / "input.json").read_text()
    with pytest.raises(ValueError, match="input is not JSON-serialisable"):
        workdir.encode({"x": float("nan")}, "input")


# -- the protocol and the process registry on their own ----------------------------------------

def test_collect_reads_variable_lines_last_one_wins(tmp_path: Path) -> None:
    (tmp_path / "variables_set.jsonl").write_text(
        '{"key": "a", "value": 1}\n\n{"key": "a", "value": {"x": 2}}\n[1]\n{"key": "b", "value": null}\nnope\n')
    artifacts = workdir.collect(tmp_path)

    assert artifacts.variables_set == {"a": {"x": 2}, "b": None}
    assert artifacts.error is not None
    assert "line 4 is not" in artifacts.error and "line 6 is not valid JSON" in artifacts.error


def test_command_for_and_helper_env(tmp_path: Path) -> None:
    assert workdir.command_for("python", tmp_path / "script.py") == [sys.executable, "-u",
                                                                     str(tmp_path / "script.py")]
    assert workdir.command_for("node", "s.js", python="python3") == ["node", "s.js"]
    with pytest.raises(ValueError, match="unknown runtime"):
        workdir.command_for("ruby", "s.rb")
    env = workdir.helper_env("/job")
    assert env["FLOWFORGE_JOB_DIR"] == "/job"
    assert env["FLOWFORGE_HELPERS"] == env["PYTHONPATH"] == env["NODE_PATH"] == "/job/_helpers"


def test_kill_all_terminates_registered_groups() -> None:
    proc = subprocess.Popen(["bash", "-c", "sleep 100 & echo $!; sleep 100"], stdout=subprocess.PIPE,
                            start_new_session=True, text=True)
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    processes.register(proc)
    assert proc.pid in processes.live()

    processes.kill_all(grace=0.5)

    assert proc.returncode == -signal.SIGTERM
    assert not running(grandchild)
    assert processes.live() == []
    proc.stdout.close()
