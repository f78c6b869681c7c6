"""Message jobs: a text delivered through apprise URLs, as Prefect's notification blocks do.

`to` names apprise URLs, or stored notification targets: secrets holding one or more apprise
URLs separated by spaces, loaded when the job runs and masked like any secret.
"""

from __future__ import annotations

import re
from typing import Any

from flowforge.connectors import egress
from flowforge.core import templates
from flowforge.core.errors import JobError
from flowforge.core.jobs import MessageJob
from flowforge.runtime.kinds.base import JobContext, KindResult
from flowforge.runtime.secrets import load_secrets
from flowforge.runtime.settings import WorkerSettings

_CREDENTIALS = re.compile(r"(?P<scheme>[a-z0-9+.-]+://)(?P<userinfo>[^@/\s?#]+)@", re.IGNORECASE)
# apprise also takes credentials as query arguments (`?pass=...`, `?token=...`)
_QUERY_SECRETS = re.compile(r"(?P<key>[?&](?:pass|password|pwd|token|secret|key|apikey)=)[^&#\s]*",
                            re.IGNORECASE)


def redact_url(url: str) -> str:
    """A URL as it may appear in logs and errors: user:password parts replaced."""
    url = _CREDENTIALS.sub(lambda m: f"{m.group('scheme')}***@", url)
    return _QUERY_SECRETS.sub(lambda m: f"{m.group('key')}***", url)


def send_message(to: list[str], body: str, title: str | None = None,
                 allow: str | None = None) -> dict[str, Any]:
    """Send one message to every URL; any failed delivery fails the job with apprise's reason.

    Egress is guarded as for http jobs (`allow`: FLOWFORGE_EGRESS_ALLOW's notation); apprise
    sends from this thread (no async mode), where the guard is active."""
    import apprise  # imported here: only message jobs pay for it

    try:
        rules = egress.parse_allow(allow)
    except ValueError as exc:
        raise JobError(str(exc)) from None
    targets = apprise.Apprise(asset=apprise.AppriseAsset(async_mode=False))
    for url in to:
        if not targets.add(url):
            raise JobError(f"not a valid apprise URL: {redact_url(url)}")
    with egress.guarded(rules) as guard, \
            apprise.LogCapture(level=apprise.logging.WARNING) as captured:
        ok = targets.notify(body=body, title=title or "")
    if not ok:
        if guard.refused:
            raise JobError(f"message delivery failed: {guard.refused}")
        detail = " ".join(captured.getvalue().split())[-500:] or "no reason given"
        raise JobError(f"message delivery failed: {detail}")
    return {"delivered": [redact_url(u) for u in to]}


def run(ctx: JobContext) -> KindResult:
    job = ctx.job
    assert isinstance(job, MessageJob)
    urls: list[str] = []
    shown: list[str] = []
    for entry in job.targets():
        target = str(ctx.render("to", entry)).strip()
        if "://" in target:
            urls.append(target)
            shown.append(redact_url(target))
            continue
        stored = load_secrets([target], ctx.scope.spec.ns)[target]
        ctx.scope.masker.add([stored, *stored.split()])
        found = stored.split()
        if not found:
            raise JobError(f"notification target '{target}' holds no apprise URL")
        urls.extend(found)
        shown.append(f"target:{target}")
    body = templates.to_env_value(ctx.render("body", job.body or ""))
    title = ctx.render("title", job.title) if job.title else None
    send_message(urls, body, None if title is None else str(title),
                 allow=WorkerSettings().egress_allow)
    return {"delivered": shown}, None


__all__ = ["redact_url", "run", "send_message"]
