"""Running the job kinds that are not scripts: `http`, `message` and `workflow`.

Each renders its templates against the run context (which holds the job's secrets, loaded
just before), then hands plain data to its executor module. Kept out of `run.py` so the job
task stays about gating, the ledger and masking; every value that leaves here is masked by
the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowforge.errors import JobError
from flowforge.runtime import templates

if TYPE_CHECKING:
    from flowforge.runtime.run import WorkflowRun
    from flowforge.spec import Job

Log = Callable[[str], None]


def _render(job: Job, field: str, value: Any, context: dict[str, Any]) -> Any:
    try:
        return templates.render(value, context)
    except templates.TemplateError as exc:
        raise JobError(f"job '{job.name}': {field}: {exc}") from exc


def run_kind(run: WorkflowRun, job: Job, context: dict[str, Any], attempt: int, log: Log) -> Any:
    """Run an http, message or workflow job; returns its output or raises `JobError`."""
    if job.type == "http":
        return _http(job, context, log)
    if job.type == "message":
        return _message(run, job, context)
    if job.type == "workflow":
        return _workflow(run, job, context, attempt, log)
    raise JobError(f"job '{job.name}': job type '{job.type}' cannot run in this release")


def _http(job: Job, context: dict[str, Any], log: Log) -> Any:
    from flowforge.runtime.http import HttpRequest, send

    def text(field: str, value: Any) -> str:
        return templates.to_env_value(_render(job, field, value, context))

    request = HttpRequest(
        method=(job.method or "GET").upper(),
        url=text("url", job.url),
        headers={k: text(f"headers.{k}", v) for k, v in (job.headers or {}).items()},
        query={k: text(f"query.{k}", v) for k, v in (job.query or {}).items()},
        json_body=_render(job, "json", job.json_body, context),
        has_json=job.json_body is not None,
        body=None if job.body is None else text("body", job.body),
        auth=None if job.auth is None else _render(
            job, "auth", job.auth.model_dump(exclude_none=True), context),
        timeout=job.timeout,
        expect_status=job.expect_status,
        retries=job.retries,
        retry_delay=job.retry_delay,
    )
    return send(request, log)


def _message(run: WorkflowRun, job: Job, context: dict[str, Any]) -> Any:
    """Send to apprise URLs, or to stored notification targets: secrets holding apprise URLs."""
    from flowforge.runtime.message import redact_url, send_message
    from flowforge.runtime.secrets import load_secrets

    urls: list[str] = []
    shown: list[str] = []
    for entry in [job.to] if isinstance(job.to, str) else list(job.to or []):
        target = str(_render(job, "to", entry, context)).strip()
        if "://" in target:
            urls.append(target)
            shown.append(redact_url(target))
            continue
        stored = load_secrets([target])[target]
        run.masker.add([stored, *stored.split()])
        found = stored.split()
        if not found:
            raise JobError(f"notification target '{target}' holds no apprise URL")
        urls.extend(found)
        shown.append(f"target:{target}")
    body = templates.to_env_value(_render(job, "body", job.body or "", context))
    title = _render(job, "title", job.title, context) if job.title else None
    send_message(urls, body, None if title is None else str(title))
    return {"delivered": shown}


def _workflow(run: WorkflowRun, job: Job, context: dict[str, Any], attempt: int, log: Log) -> Any:
    from flowforge.runtime import subflow

    assert job.workflow is not None  # guaranteed by the spec
    inputs = _render(job, "inputs", job.inputs or {}, context)
    trigger = {"type": "workflow", "parent_run_id": run.flow_run_id,
               "parent_workflow": run.spec.name, "job": job.name}
    return subflow.run(
        job.workflow, inputs, wait=job.wait is not False, trigger=trigger,
        # one sub-run per attempt: a retried job starts a new one, a replayed attempt does not
        idempotency_key=f"workflow:{run.flow_run_id}:{job.name}:{attempt}",
        timeout=job.timeout, stopping=run.stopping, log=log)


__all__ = ["run_kind"]
