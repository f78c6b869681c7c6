"""The `message` job: deliver a text through apprise URLs, as Prefect's notification blocks do."""

from __future__ import annotations

import re
from typing import Any

from flowforge.errors import JobError

_CREDENTIALS = re.compile(r"(?P<scheme>[a-z0-9+.-]+://)(?P<userinfo>[^@/\s?#]+)@", re.IGNORECASE)
# apprise also takes credentials as query arguments (`?pass=...`, `?token=...`)
_QUERY_SECRETS = re.compile(r"(?P<key>[?&](?:pass|password|pwd|token|secret|key|apikey)=)[^&#\s]*",
                            re.IGNORECASE)


def redact_url(url: str) -> str:
    """A URL as it may appear in logs and errors: user:password parts replaced."""
    url = _CREDENTIALS.sub(lambda m: f"{m.group('scheme')}***@", url)
    return _QUERY_SECRETS.sub(lambda m: f"{m.group('key')}***", url)


def send_message(to: list[str], body: str, title: str | None = None) -> dict[str, Any]:
    """Send one message to every URL; any failed delivery fails the job with apprise's reason."""
    import apprise  # imported here: only message jobs pay for it

    targets = apprise.Apprise()
    for url in to:
        if not targets.add(url):
            raise JobError(f"not a valid apprise URL: {redact_url(url)}")
    with apprise.LogCapture(level=apprise.logging.WARNING) as captured:
        ok = targets.notify(body=body, title=title or "")
    if not ok:
        detail = " ".join(captured.getvalue().split())[-500:] or "no reason given"
        raise JobError(f"message delivery failed: {detail}")
    return {"delivered": [redact_url(u) for u in to]}


__all__ = ["redact_url", "send_message"]
