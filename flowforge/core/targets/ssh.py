"""`target: {ssh: {servers: [web1, web2]}}` or `{ssh: {tags: [web]}}`: every server at once."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from flowforge.core.names import SERVER_NAME_RE
from flowforge.core.targets.base import TargetBase


class SshTarget(TargetBase):
    """Run on every server listed. Tags are resolved when the job starts, from the server
    records in Prefect, so a server added with the tag later is included without re-deploying
    the workflow."""

    kind: ClassVar[str] = "ssh"

    servers: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    allow_partial: bool = False

    @model_validator(mode="after")
    def _check(self) -> SshTarget:
        if not self.servers and not self.tags:
            raise ValueError("an ssh target needs 'servers' or 'tags' (a non-empty list)")
        for field, names in (("servers", self.servers), ("tags", self.tags)):
            bad = [n for n in names if not SERVER_NAME_RE.match(n)]
            if bad:
                raise ValueError(f"{field}: '{bad[0]}' is not a valid name (lowercase letters, "
                                 "digits and '-', at most 63 characters)")
            if len(set(names)) != len(names):
                raise ValueError(f"{field}: lists a name more than once")
        return self


__all__ = ["SshTarget"]
