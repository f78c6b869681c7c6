"""Run inputs checked against a workflow's declared inputs, each problem naming the input."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from flowforge.errors import InputError

if TYPE_CHECKING:
    from flowforge.spec import InputSpec, Workflow


def input_type_problem(spec: InputSpec, value: Any) -> str | None:
    """Why `value` is not valid for `spec`, or None."""
    kind = spec.type
    ok = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "enum": lambda v: True,
        "json": lambda v: True,
    }[kind]
    if not ok(value):
        return (f"must be of type {kind}, got {type(value).__name__} "
                f"{json.dumps(value, default=str)[:60]}")
    if spec.enum is not None and value not in spec.enum:
        return (f"must be one of {json.dumps(spec.enum, default=str)}, "
                f"got {json.dumps(value, default=str)[:60]}")
    return None


def resolve_inputs(wf: Workflow, given: dict[str, Any] | None) -> dict[str, Any]:
    """Validate run inputs against the declared ones and fill defaults; InputError names each."""
    given = dict(given or {})
    problems: list[dict[str, Any]] = []
    for name in sorted(set(given) - set(wf.inputs)):
        problems.append({"field": f"inputs.{name}", "input": name,
                         "message": f"unknown input '{name}'"})
    resolved: dict[str, Any] = {}
    for name, spec in wf.inputs.items():
        if name in given:
            problem = input_type_problem(spec, given[name])
            if problem:
                problems.append({"field": f"inputs.{name}", "input": name,
                                 "message": f"input '{name}' {problem}"})
            resolved[name] = given[name]
        elif spec.default is not None:
            resolved[name] = spec.default
        elif spec.is_required:
            problems.append({"field": f"inputs.{name}", "input": name,
                             "message": f"input '{name}' is required"})
        else:
            resolved[name] = None
    if problems:
        raise InputError(problems)
    return resolved


__all__ = ["input_type_problem", "resolve_inputs"]
