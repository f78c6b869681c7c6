"""FlowForge job helpers for Python scripts: `import flowforge_helpers as ff`.

A job talks to FlowForge only through files in its job directory (`$FLOWFORGE_JOB_DIR`), so
the same script works on the worker, in a container and on an SSH host. This file is copied
next to every job and must run on whatever python3 the target has: standard library only,
no syntax newer than Python 3.6.

Inputs (written before the job): input.json, variables.json, event.json.
Outputs (read after the job): output.json (any JSON value), condition.json (true/false),
variables_set.jsonl (one {"key": ..., "value": ...} per line, last one per key wins),
progress.json ({"pct": ..., "message": ...}, latest only).
"""

import json
import math
import os
import sys
from typing import Any

__all__ = [
    "HelperError",
    "event",
    "get_variable",
    "input",
    "output",
    "progress",
    "set_condition",
    "set_variable",
]


class HelperError(RuntimeError):
    """The job directory is missing or one of its input files cannot be read."""


def _job_dir() -> str:
    path = os.environ.get("FLOWFORGE_JOB_DIR")
    if not path:
        raise HelperError("FLOWFORGE_JOB_DIR is not set: flowforge_helpers only works inside a FlowForge job")
    return path


def _read(name: str) -> Any:
    path = os.path.join(_job_dir(), name)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise HelperError(f"{name} is missing from the job directory {_job_dir()}") from None
    except ValueError as exc:
        raise HelperError(f"{name} is not valid JSON: {exc}") from None


def _dumps(value: Any, what: str) -> str:
    # allow_nan=False: NaN/Infinity are not JSON and other languages could not read them back.
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} needs a JSON-serialisable value: {exc}") from None


def _write(name: str, text: str) -> None:
    # Write-then-rename, so the executor never reads half a file if the job is killed mid-write.
    path = os.path.join(_job_dir(), name)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    os.replace(tmp, path)


def input() -> Any:
    """The job's input: {"inputs", "params", "jobs", "item", "trigger"}."""
    return _read("input.json")


def event() -> Any:
    """What this execution is: {"workflow", "job", "run_id", "trigger", "attempt", "item"}."""
    return _read("event.json")


def output(data: Any) -> None:
    """Set the job's output (any JSON value); a second call replaces the first."""
    _write("output.json", _dumps(data, "output()"))


def set_condition(value: Any) -> None:
    """Set the job's condition, which `on: true` / `on: false` edges downstream look at."""
    if not isinstance(value, bool):
        raise TypeError(f"set_condition() needs True or False, got {value!r}")
    _write("condition.json", "true" if value else "false")


def _changes() -> dict:
    path = os.path.join(_job_dir(), "variables_set.jsonl")
    changes = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    changes[entry["key"]] = entry["value"]
                except (ValueError, KeyError, TypeError) as exc:
                    raise HelperError(f"variables_set.jsonl has a bad line ({exc}): {line!r}") from None
    return changes


def get_variable(key: str, default: Any = None) -> Any:
    """A variable's value, including ones this job already set, else `default`."""
    changes = _changes()
    if key in changes:
        return changes[key]
    path = os.path.join(_job_dir(), "variables.json")
    variables = _read("variables.json") if os.path.exists(path) else {}
    return variables.get(key, default) if isinstance(variables, dict) else default


def set_variable(key: str, value: Any) -> None:
    """Set a variable (any JSON value); FlowForge stores it after the job ends."""
    if not isinstance(key, str) or not key:
        raise TypeError(f"set_variable() needs a non-empty string key, got {key!r}")
    line = _dumps({"key": key, "value": value}, "set_variable()")
    # Appending one line per call keeps the format writable from bash without a JSON parser.
    with open(os.path.join(_job_dir(), "variables_set.jsonl"), "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def progress(pct: Any, message: str = "") -> None:
    """Report progress 0..100; the latest value is kept and a line goes to the job's log."""
    if isinstance(pct, bool) or not isinstance(pct, (int, float)) or math.isnan(pct):
        raise TypeError(f"progress() needs a number from 0 to 100, got {pct!r}")
    if not 0 <= pct <= 100:
        raise ValueError(f"progress() needs a number from 0 to 100, got {pct!r}")
    if isinstance(pct, float) and pct.is_integer():
        pct = int(pct)
    message = str(message)
    _write("progress.json", _dumps({"pct": pct, "message": message}, "progress()"))
    line = f"[progress {pct}%] {message}" if message else f"[progress {pct}%]"
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
