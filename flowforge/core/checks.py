"""How the pieces of a document report problems: `bad(field, message)` and what they may see.

Every check in the model (a job kind's, a target's) reports through a `Bad` callback with the
field relative to itself; the caller prefixes the path (`jobs[2].target.container.memory`) and
the job's name, so a check never needs to know where in the document it sits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowforge.core.workflow import WorkflowSettings

Bad = Callable[[str, str], None]


@dataclass(frozen=True)
class CheckContext:
    """What a job's (or its target's) checks may know of the workflow around it."""

    workflow: str
    settings: WorkflowSettings


__all__ = ["Bad", "CheckContext"]
