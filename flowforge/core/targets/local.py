"""`target: {local: {}}`, or no target: the job runs on the worker that runs the flow run."""

from __future__ import annotations

from typing import ClassVar

from flowforge.core.targets.base import TargetBase


class LocalTarget(TargetBase):
    kind: ClassVar[str] = "local"


__all__ = ["LocalTarget"]
