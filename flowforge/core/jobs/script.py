"""`type: script`: a bash, python or node script, on any target, talking through the helpers."""

from __future__ import annotations

from typing import ClassVar, Literal

from flowforge.core.checks import Bad, CheckContext
from flowforge.core.jobs.base import JobBase
from flowforge.core.targets import TARGETS

Runtime = Literal["bash", "python", "node"]


class ScriptJob(JobBase):
    target_kinds: ClassVar[frozenset[str]] = frozenset(TARGETS)
    runs_on_target: ClassVar[bool] = True

    type: Literal["script"] = "script"
    runtime: Runtime | None = None
    script: str | None = None

    @property
    def display_kind(self) -> str:
        return self.runtime or self.type

    def check_kind(self, ctx: CheckContext, bad: Bad) -> None:
        if self.runtime is None:
            bad("runtime", "a script job needs 'runtime' (bash, python or node)")
        if not self.script:
            bad("script", "a script job needs a non-empty 'script'")


__all__ = ["Runtime", "ScriptJob"]
