"""`type: message`: a text delivered through apprise URLs or stored notification targets."""

from __future__ import annotations

from typing import ClassVar, Literal

from flowforge.core import templates
from flowforge.core.checks import Bad, CheckContext
from flowforge.core.jobs.base import JobBase
from flowforge.core.names import SECRET_NAME_RE, reserved_name_problem


class MessageJob(JobBase):
    template_fields: ClassVar[tuple[str, ...]] = ("to", "title", "body")
    # `to` reaches apprise only; a title or body is what the message publishes.
    secret_fields: ClassVar[frozenset[str]] = frozenset({"env", "to"})

    type: Literal["message"] = "message"
    #: Apprise URLs, or names of secrets that hold some (stored notification targets).
    to: str | list[str] | None = None
    title: str | None = None
    body: str | None = None

    def targets(self) -> list[str]:
        return [self.to] if isinstance(self.to, str) else list(self.to or [])

    def check_kind(self, ctx: CheckContext, bad: Bad) -> None:
        if not self.to:
            bad("to", "a message job needs 'to' (one or more apprise URLs)")
        if self.body is None:
            bad("body", "a message job needs a 'body'")
        for k, url in enumerate(self.targets()):
            if templates.is_template(url) or "://" in url:
                continue
            if SECRET_NAME_RE.match(url):
                reserved = reserved_name_problem(url)
                if reserved:
                    bad(f"to[{k}]" if isinstance(self.to, list) else "to",
                        f"secret '{url}' cannot be read by a job: {reserved}")
                continue
            bad(f"to[{k}]" if isinstance(self.to, list) else "to",
                f"'{url[:80]}' is neither an apprise URL (scheme://...) nor the name of a "
                "stored notification target (a secret)")


__all__ = ["MessageJob"]
