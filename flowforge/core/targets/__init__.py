"""Targets: where a script job runs. One model class per kind, keyed by kind in a document.

A document names a target by its kind, `target: {container: {...}}`, as it always has, so the
union of targets is discriminated by that one key. `Target` is built from `TARGETS`: a field per
kind, exactly one of them set. Adding a target is one model class here, registered below, plus
its executor in `flowforge.runtime.executors` (an unregistered kind is refused, never run
locally).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, create_model, model_validator

from flowforge.core.targets.base import TargetBase
from flowforge.core.targets.container import ContainerTarget
from flowforge.core.targets.local import LocalTarget
from flowforge.core.targets.ssh import SshTarget

TARGETS: dict[str, type[TargetBase]] = {
    cls.kind: cls for cls in (LocalTarget, ContainerTarget, SshTarget)
}


def _listed(names: list[str], word: str) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {word} {names[-1]}"


class _OneTarget(BaseModel):
    """The one-of shape every `Target` has: a field per registered kind, one set."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _exactly_one(self) -> Any:
        chosen = [kind for kind in TARGETS if getattr(self, kind) is not None]
        if len(chosen) != 1:
            every = _listed(list(TARGETS), "or")
            raise ValueError(f"a target is one of {every}, not {_listed(chosen, 'and')}"
                             if chosen else f"a target names one of {every}, e.g. "
                             "{container: {}}")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in TARGETS if getattr(self, kind) is not None)

    @property
    def chosen(self) -> TargetBase:
        """The options of the kind this target names."""
        value: TargetBase = getattr(self, self.kind)
        return value


if TYPE_CHECKING:
    Target = _OneTarget
else:
    Target = create_model(
        "Target", __base__=_OneTarget,
        **{kind: (cls | None, None) for kind, cls in TARGETS.items()})

__all__ = ["TARGETS", "ContainerTarget", "LocalTarget", "SshTarget", "Target", "TargetBase"]
