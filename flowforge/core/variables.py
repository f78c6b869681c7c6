"""The rules of workflow variables: JSON values jobs share across runs, kept as Prefect variables.

The rules are Prefect's: names are lowercase letters, digits, `-` and `_` (at most 255), and a
value is at most 5,000 characters as JSON. The API checks a `PUT /variables/{key}` against them
and the runtime a job's `set_variable`, so both refuse the same things with the same words.
"""

from __future__ import annotations

import json
from typing import Any, Final

from flowforge.core.names import VARIABLE_NAME_RE, reserved_name_problem

MAX_VALUE_CHARS: Final = 5000


def name_problem(key: str) -> str | None:
    if not VARIABLE_NAME_RE.match(key):
        return (f"variable name '{key[:80]}' must be 1-200 lowercase letters, digits, '-' or "
                "'_' (no '--')")
    reserved = reserved_name_problem(key)
    return f"variable name '{key[:80]}': {reserved}" if reserved else None


def value_problem(value: Any) -> str | None:
    try:
        size = len(json.dumps(value))
    except (TypeError, ValueError) as exc:
        return f"the value is not JSON: {exc}"
    if size > MAX_VALUE_CHARS:
        return f"the value is {size} characters as JSON; at most {MAX_VALUE_CHARS} are allowed"
    return None


__all__ = ["MAX_VALUE_CHARS", "name_problem", "value_problem"]
