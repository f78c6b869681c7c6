"""The job working-directory protocol: what a job finds before it runs and leaves behind.

Every executor (local, container, SSH) speaks to a script only through one directory of plain
files, so the helpers behave the same everywhere and the directory can be bind-mounted into a
container or uploaded over SFTP as it is. `prepare` makes the directory self-contained (inputs,
the script and a copy of the helper files) for executors whose script cannot see this machine;
the local executor points the script at the installed helpers instead, because at 10,000
for-each items the copies were a tenth of the run's system time. `collect` reads the script's
results back and turns anything malformed into an error message rather than an exception,
because a broken `output.json` is the job's failure, not the executor's.

Files (all UTF-8 JSON):

| file | written by | content |
|---|---|---|
| `input.json` | runtime | `{"inputs", "params", "jobs", "item", "trigger"}` |
| `variables.json` | runtime | `{name: value}` for `get_variable`; absent means `{}` |
| `event.json` | runtime | `{"workflow", "job", "run_id", "trigger", "attempt", "item"}` |
| `script.py` / `script.sh` / `script.js` | runtime | the job's script |
| `_helpers/` | runtime | `flowforge_helpers.py`, `flowforge.js`, `flowforge.sh` (remote and container jobs) |
| `output.json` | script | any JSON value; absent means no output |
| `condition.json` | script | `true` or `false` |
| `variables_set.jsonl` | script | one `{"key": k, "value": v}` per line; the last line per key wins |
| `progress.json` | script | `{"pct": 0..100, "message": str}`, the latest report |
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, ClassVar, Final

HELPERS_SOURCE: Final = Path(__file__).parent / "helpers"
HELPER_FILES: Final = ("flowforge.js", "flowforge.sh", "flowforge_helpers.py")
RUNTIMES: Final = ("bash", "node", "python")


@dataclass(frozen=True)
class JobFiles:
    """Where each protocol file lives in one job directory.

    Paths are built with the directory's own path type, so a container or SSH executor can
    pass a `PurePosixPath` of the remote directory and get remote paths back.
    """

    INPUT: ClassVar[str] = "input.json"
    VARIABLES: ClassVar[str] = "variables.json"
    EVENT: ClassVar[str] = "event.json"
    OUTPUT: ClassVar[str] = "output.json"
    CONDITION: ClassVar[str] = "condition.json"
    VARIABLES_SET: ClassVar[str] = "variables_set.jsonl"
    PROGRESS: ClassVar[str] = "progress.json"
    HELPERS: ClassVar[str] = "_helpers"
    SCRIPTS: ClassVar[dict[str, str]] = {"bash": "script.sh", "node": "script.js", "python": "script.py"}

    root: PurePath

    @property
    def input(self) -> PurePath:
        return self.root / self.INPUT

    @property
    def variables(self) -> PurePath:
        return self.root / self.VARIABLES

    @property
    def event(self) -> PurePath:
        return self.root / self.EVENT

    @property
    def output(self) -> PurePath:
        return self.root / self.OUTPUT

    @property
    def condition(self) -> PurePath:
        return self.root / self.CONDITION

    @property
    def variables_set(self) -> PurePath:
        return self.root / self.VARIABLES_SET

    @property
    def progress(self) -> PurePath:
        return self.root / self.PROGRESS

    @property
    def helpers(self) -> PurePath:
        return self.root / self.HELPERS

    def script(self, runtime: str) -> PurePath:
        try:
            return self.root / self.SCRIPTS[runtime]
        except KeyError:
            raise ValueError(f"unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}") from None


@dataclass
class JobArtifacts:
    """What a script left in its job directory, with every malformed file named in `problems`."""

    output: Any = None
    condition: bool | None = None
    variables_set: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        """All problems as one message, or None when every file the script wrote was valid."""
        return "; ".join(self.problems) if self.problems else None


class EncodedJSON(str):
    """A value already serialised (by `encode`), placed into `input.json` as it is.

    What every item of a for-each job shares (the run's inputs, the upstream outputs, often
    the very list being mapped) is encoded once per job instead of once per item: at 10,000
    items over a 10,000-entry upstream list, re-encoding it was quadratic.
    """


def encode(value: Any, what: str) -> EncodedJSON:
    return EncodedJSON(_dumps(value, what))


def _dumps(value: Any, what: str) -> str:
    if isinstance(value, EncodedJSON):
        return str(value)
    if isinstance(value, dict) and any(isinstance(v, EncodedJSON) for v in value.values()):
        return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)}: {_dumps(v, what)}"
                               for k, v in value.items()) + "}"
    # allow_nan=False: NaN is not JSON, and node or bash on the other side could not read it.
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"job {what} is not JSON-serialisable: {exc}") from exc


def _write(path: PurePath, text: str) -> None:
    """Create and fill one file in three system calls.

    `Path.write_text` makes six (it also stats, asks whether the file is a terminal and seeks),
    and each call lets go of the GIL: with ten item threads and Prefect's engine contending
    for it, every release can cost a thread milliseconds before it runs again, which made up
    most of a for-each item's overhead at 10,000 items.
    """
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def prepare(job_dir: Path, *, input: dict[str, Any] | EncodedJSON,
            variables: dict[str, Any] | EncodedJSON, event: dict[str, Any] | EncodedJSON,
            script: str, runtime: str, helpers: bool = True) -> Path:
    """Fill `job_dir` (created if needed) for one job and return the script's path.

    `helpers=False` leaves out the helper copies, for a script that finds them through
    `helper_env(job_dir, HELPERS_SOURCE)`. Raises ValueError for an unknown runtime or a value
    that is not JSON, before anything runs, so a job never starts with half its inputs.
    """
    files = JobFiles(job_dir)
    script_path = Path(files.script(runtime))
    texts = {
        files.input: _dumps(input, "input"),
        files.event: _dumps(event, "event"),
    }
    if variables:  # the helpers read a missing file as no variables
        texts[files.variables] = _dumps(variables, "variables")
    if not job_dir.is_dir():
        job_dir.mkdir(parents=True, exist_ok=True)
    for path, text in texts.items():
        _write(path, text + "\n")
    _write(script_path, script if script.endswith("\n") else script + "\n")
    if helpers:
        helpers_dir = Path(files.helpers)
        helpers_dir.mkdir(exist_ok=True)
        for name in HELPER_FILES:
            shutil.copyfile(HELPERS_SOURCE / name, helpers_dir / name)
    return script_path


#: The most a result file (output.json, variables_set.jsonl, ...) may hold.
MAX_RESULT_BYTES: Final = 16 * 1024 * 1024


def read_result(path: Path) -> str:
    """A result file's text, read as the job left it without trusting it: the job (another
    user) could have made it a link to a file only the worker may read, a FIFO that never
    ends, or /dev/zero. Only a regular file of at most MAX_RESULT_BYTES, never followed
    through a link; OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path.name} is not a regular file")
        if st.st_size > MAX_RESULT_BYTES:
            raise OSError(f"{path.name} is larger than {MAX_RESULT_BYTES // (1024 * 1024)} MiB")
        chunks: list[bytes] = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8")


def _load(path: Path, problems: list[str]) -> tuple[bool, Any]:
    """(present, value); a file that is there but not JSON adds a problem instead of raising."""
    try:
        text = read_result(path)
    except FileNotFoundError:
        return False, None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path.name} could not be read: {exc}")
        return False, None
    try:
        return True, json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        problems.append(f"{path.name} is not valid JSON: {exc}")
        return False, None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _variables_set(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        lines = read_result(path).splitlines()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path.name} could not be read: {exc}")
        return {}
    changes: dict[str, Any] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line, parse_constant=_reject_constant)
        except ValueError as exc:
            problems.append(f"{path.name} line {number} is not valid JSON: {exc}")
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("key"), str) and "value" in entry):
            problems.append(f'{path.name} line {number} is not {{"key": str, "value": ...}}')
            continue
        changes[entry["key"]] = entry["value"]
    return changes


def listing(job_dir: Path) -> list[str] | None:
    """The names in a job directory, or None if it cannot be listed."""
    try:
        return os.listdir(job_dir)
    except OSError:
        return None


def collect(job_dir: Path, names: list[str] | None = None) -> JobArtifacts:
    """Read back what the script wrote. Never raises for the script's own mistakes.

    One directory listing (`names`, when the caller already has it) says which result files
    exist, so a job that wrote none, as most do, costs no failed opens.
    """
    files = JobFiles(job_dir)
    artifacts = JobArtifacts()
    problems = artifacts.problems
    if names is None:
        names = listing(job_dir)
    if names is None:
        problems.append("the job directory could not be read")
        return artifacts
    present = set(names)
    if JobFiles.OUTPUT in present:
        _, artifacts.output = _load(Path(files.output), problems)
    if JobFiles.CONDITION in present:
        found, condition = _load(Path(files.condition), problems)
        if found and not isinstance(condition, bool):
            problems.append(f"condition.json must be true or false, got {json.dumps(condition)}")
        elif found:
            artifacts.condition = condition
    if JobFiles.VARIABLES_SET in present:
        artifacts.variables_set = _variables_set(Path(files.variables_set), problems)
    if JobFiles.PROGRESS in present:
        # Only a display hint: a bad progress.json must not fail a job that succeeded.
        _, progress = _load(Path(files.progress), [])
        if (isinstance(progress, dict) and isinstance(progress.get("pct"), int | float)
                and not isinstance(progress.get("pct"), bool) and math.isfinite(progress["pct"])):
            artifacts.progress = {"pct": progress["pct"],
                                  "message": str(progress.get("message", ""))}
    return artifacts


def remove(job_dir: Path, names: list[str] | None = None) -> None:
    """Delete a job directory; the common case (only the files named above) without a walk.

    `shutil.rmtree` opens, stats and lists its way down even for a directory of three files;
    unlinking the names one listing returned, then `rmdir`, is what most jobs need. Anything
    the script left besides plain files (a subdirectory) falls back to `rmtree`.
    """
    root = os.fspath(job_dir)
    try:
        for name in os.listdir(root) if names is None else names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(root, name))
        os.rmdir(root)
    except FileNotFoundError:  # already gone
        pass
    except OSError:  # a subdirectory, or something unlink may not touch
        shutil.rmtree(root, ignore_errors=True)


def command_for(runtime: str, script_path: PurePath | str, *, python: str | None = None) -> list[str]:
    """The argv that runs a script; the interpreter is found on the job's PATH.

    Python defaults to the flow run's own interpreter so local scripts see the same packages;
    `-u` because a block-buffered stdout would hold log lines back until the script ends.
    Remote executors pass `python="python3"`.
    """
    if runtime == "python":
        return [python or sys.executable, "-u", str(script_path)]
    if runtime == "bash":
        return ["bash", str(script_path)]
    if runtime == "node":
        return ["node", str(script_path)]
    raise ValueError(f"unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")


def helper_env(job_dir: PurePath | str, helpers_dir: PurePath | str | None = None) -> dict[str, str]:
    """The variables a script needs to find its directory and import the helpers.

    `job_dir` is the path as the script sees it (e.g. the mount point inside a container),
    which may differ from where the executor wrote the files; `helpers_dir` defaults to the
    copy `prepare` puts in it.
    """
    root = PurePosixPath(job_dir)
    helpers = str(root / JobFiles.HELPERS if helpers_dir is None else helpers_dir)
    return {
        "FLOWFORGE_JOB_DIR": str(root),
        "FLOWFORGE_HELPERS": helpers,
        "NODE_PATH": helpers,
        "PYTHONPATH": helpers,
        "PYTHONUNBUFFERED": "1",
    }


__all__ = [
    "HELPERS_SOURCE",
    "HELPER_FILES",
    "RUNTIMES",
    "EncodedJSON",
    "JobArtifacts",
    "JobFiles",
    "collect",
    "command_for",
    "encode",
    "helper_env",
    "listing",
    "prepare",
    "remove",
]
