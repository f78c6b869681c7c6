"""What every target model is: the options of one place a script job can run."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from flowforge.core.checks import Bad, CheckContext


class TargetBase(BaseModel):
    """One kind of target. `kind` is its key in a document (`target: {container: {...}}`)
    and the name the runtime looks its executor up by."""

    model_config = ConfigDict(extra="forbid")

    kind: ClassVar[str]

    def check(self, ctx: CheckContext, bad: Bad) -> None:
        """Rules that need the workflow around the target (fields relative to the target)."""


__all__ = ["TargetBase"]
