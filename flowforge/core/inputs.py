"""Typed workflow inputs: their declaration, and run inputs checked against it.

Each problem names the input, so a run request that gets one wrong answers a 422 saying which.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from flowforge.core.errors import InputError

InputType = Literal["string", "integer", "number", "boolean", "enum", "json"]


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: InputType = "string"
    description: str | None = None
    enum: list[Any] | None = None
    default: Any = None
    required: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> InputSpec:
        if self.type == "enum" and not self.enum:
            raise ValueError("type 'enum' needs a non-empty 'enum' list")
        if self.default is not None:
            problem = input_type_problem(self, self.default)
            if problem:
                raise ValueError(f"default {problem}")
        return self

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None


_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "enum": lambda v: True,
    "json": lambda v: True,
}


def input_type_problem(spec: InputSpec, value: Any) -> str | None:
    """Why `value` is not valid for `spec`, or None."""
    if not _CHECKS[spec.type](value):
        return (f"must be of type {spec.type}, got {type(value).__name__} "
                f"{json.dumps(value, default=str)[:60]}")
    if spec.enum is not None and value not in spec.enum:
        return (f"must be one of {json.dumps(spec.enum, default=str)}, "
                f"got {json.dumps(value, default=str)[:60]}")
    return None


def resolve_inputs(declared: Mapping[str, InputSpec] | Any,
                   given: dict[str, Any] | None) -> dict[str, Any]:
    """Validate run inputs against the declared ones (a mapping, or a workflow's `inputs`)
    and fill defaults; InputError names each problem."""
    specs: Mapping[str, InputSpec] = declared if isinstance(declared, Mapping) else declared.inputs
    given = dict(given or {})
    problems: list[dict[str, Any]] = []
    for name in sorted(set(given) - set(specs)):
        problems.append({"field": f"inputs.{name}", "input": name,
                         "message": f"unknown input '{name}'"})
    resolved: dict[str, Any] = {}
    for name, spec in specs.items():
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


__all__ = ["InputSpec", "InputType", "input_type_problem", "resolve_inputs"]
