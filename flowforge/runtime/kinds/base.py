"""What a job kind's runtime module is given: the job, its run, its context, and helpers.

A kind module is `flowforge/runtime/kinds/<type>.py` with one function, `run(ctx) ->
(output, condition)`, which raises `JobError` when the job fails. Everything a kind needs of
the run comes through `JobContext`, so no kind module reaches into another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flowforge.core import templates
from flowforge.core.errors import JobError
from flowforge.core.jobs import JobBase
from flowforge.core.templates import RenderContext
from flowforge.core.wire import JobRecord
from flowforge.runtime.scope import RunScope

KindResult = tuple[Any, bool | None]


@dataclass
class JobContext:
    scope: RunScope
    job: JobBase
    #: Records of the job's direct upstreams, as the gate saw them.
    upstream: dict[str, JobRecord]
    attempt: int
    #: The templates' context, the job's secrets included.
    context: RenderContext
    #: `log(stream, line)` into the job's task-run log, masked.
    log: Callable[[str, str], None]
    #: The for-each item this run of the job is for, if it is one.
    item: Any = None
    in_item: bool = False

    def info(self, line: str) -> None:
        self.log("stdout", line)

    def render(self, field: str, value: Any) -> Any:
        """A template value rendered, or `JobError` naming the job and the field."""
        try:
            return templates.render(value, self.context)
        except templates.TemplateError as exc:
            raise JobError(f"job '{self.job.name}': {field}: {exc}") from exc

    def text(self, field: str, value: Any) -> str:
        """A rendered value as text (the rest as JSON), as it goes into a header or a URL."""
        return templates.to_env_value(self.render(field, value))


__all__ = ["JobContext", "KindResult"]
