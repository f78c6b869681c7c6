"""Job kinds: one model class per kind, a discriminated union on `type` (default `script`).

Adding a kind is a model class in this package (a `JobBase` subclass with a `type` literal and
its `check_kind`), registered in `JOB_KINDS` below, and one runtime module,
`flowforge/runtime/kinds/<type>.py`, found by that name. Nothing else switches on `type`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Discriminator, Tag

from flowforge.core.jobs.base import DEFAULT_INTERVAL, DEFAULT_MAX_ATTEMPTS, JobBase, Need
from flowforge.core.jobs.condition import ConditionJob
from flowforge.core.jobs.http import METHODS, HttpAuth, HttpJob
from flowforge.core.jobs.message import MessageJob
from flowforge.core.jobs.script import Runtime, ScriptJob
from flowforge.core.jobs.sql import SqlJob
from flowforge.core.jobs.workflow import WorkflowJob

KINDS: tuple[type[JobBase], ...] = (
    ScriptJob, HttpJob, MessageJob, WorkflowJob, ConditionJob, SqlJob)
JOB_KINDS: dict[str, type[JobBase]] = {cls.model_fields["type"].default: cls for cls in KINDS}
DEFAULT_KIND = "script"


def kind_of(value: Any) -> str:
    """The `type` a job document or model has; a document without one is a script."""
    if isinstance(value, dict):
        kind = value.get("type", DEFAULT_KIND)
        return kind if isinstance(kind, str) else repr(kind)
    return str(getattr(value, "type", DEFAULT_KIND))


if TYPE_CHECKING:
    Job = JobBase
else:
    Job = Annotated[
        Union[tuple(Annotated[cls, Tag(kind)] for kind, cls in JOB_KINDS.items())],  # noqa: UP007
        Discriminator(kind_of, custom_error_type="job_type",
                      custom_error_message="unknown job type"),
    ]

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_KIND",
    "DEFAULT_MAX_ATTEMPTS",
    "JOB_KINDS",
    "KINDS",
    "METHODS",
    "ConditionJob",
    "HttpAuth",
    "HttpJob",
    "Job",
    "JobBase",
    "MessageJob",
    "Need",
    "Runtime",
    "ScriptJob",
    "SqlJob",
    "WorkflowJob",
    "kind_of",
]
