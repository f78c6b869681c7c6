"""Validation of the job kinds beyond scripts (http, message, workflow) and of secret references.

Kept beside `spec.py` rather than in it so the document module stays a readable contract; the
spec calls `check_kind` for each job and `secret_problem` for each template. Every problem
names the field and the job, as every spec problem does.

Secrets may only appear where a value goes to the job's process or to the remote end of a
request, never where it would be published: `env`, the http `headers`, `query`, `auth`,
`json`, `body`, and a message's `to`. A secret in `params`, a message `body`/`title`, a
sub-workflow's `inputs` (which become visible flow-run parameters) or the workflow `outputs` is
refused, so a value cannot end up in the Prefect UI by accident.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from flowforge.runtime import secrets as _secrets
from flowforge.runtime import templates
from flowforge.runtime.http import METHODS

Bad = Callable[[str, str], None]
WORKFLOW_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_STATUS_CLASS_RE = re.compile(r"^[1-5]xx$", re.IGNORECASE)

#: Which job fields belong to which kind (a field set on another kind is a mistake).
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "script": ("runtime", "script"),
    "message": ("to", "title"),
    "http": ("method", "url", "headers", "query", "json_body", "auth", "expect_status"),
    "workflow": ("workflow", "inputs", "wait"),
    "condition": (),
}
LABELS = {"json_body": "json"}
#: Template-bearing fields of the job kinds, walked by the spec's template check.
TEMPLATE_ATTRS = ("url", "headers", "query", "json_body", "auth", "inputs")
SECRET_FIELDS = {
    "script": {"env"},
    "message": {"env", "to"},
    "http": {"env", "headers", "query", "auth", "json", "body"},
    "workflow": {"env"},
}


class HttpAuth(BaseModel):
    """`{type: basic, username, password}` or `{type: bearer, token}`; values may be templates."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["basic", "bearer"]
    username: str | None = None
    password: str | None = None
    token: str | None = None


def template_value(job: Any, attr: str) -> Any:
    value = getattr(job, attr)
    return value.model_dump(exclude_none=True) if isinstance(value, BaseModel) else value


def check_kind(workflow_name: str, job: Any, bad: Bad) -> None:
    """Problems of one job's kind-specific fields, reported through `bad(field, message)`."""
    if job.type not in KIND_FIELDS:
        return  # an unsupported kind is reported once, by the spec
    for kind, fields in KIND_FIELDS.items():
        if kind == job.type:
            continue
        for attr in fields:
            if attr in KIND_FIELDS.get(job.type, ()) or getattr(job, attr) is None:
                continue
            bad(LABELS.get(attr, attr), f"'{LABELS.get(attr, attr)}' belongs to {kind} jobs, "
                f"not to a {job.type} job")
    if job.type == "http":
        _check_http(job, bad)
    elif job.type == "workflow":
        _check_workflow(workflow_name, job, bad)
    elif job.type == "message":
        _check_message(job, bad)


def _check_http(job: Any, bad: Bad) -> None:
    method = (job.method or "GET").upper()
    if method not in METHODS:
        bad("method", f"unknown HTTP method '{job.method}'; expected one of {', '.join(METHODS)}")
    if not job.url:
        bad("url", "an http job needs a 'url'")
    elif not templates.is_template(job.url) and not re.match(r"^https?://[^/\s]+", job.url):
        bad("url", f"'{job.url[:100]}' is not an http:// or https:// URL")
    if job.json_body is not None and job.body is not None:
        bad("json", "an http job takes 'json' or 'body', not both")
    if job.body is not None and not isinstance(job.body, str):
        bad("body", "'body' must be a string (use 'json' for structured data)")
    auth = job.auth
    if auth is not None:
        if auth.type == "basic" and (auth.username is None or auth.password is None or auth.token):
            bad("auth", "basic auth takes 'username' and 'password'")
        if auth.type == "bearer" and (not auth.token or auth.username or auth.password):
            bad("auth", "bearer auth takes a 'token'")
    expect = job.expect_status
    for item in expect if isinstance(expect, list) else ([] if expect is None else [expect]):
        ok = (isinstance(item, int) and 100 <= item <= 599) or (
            isinstance(item, str) and (_STATUS_CLASS_RE.match(item)
                                       or (item.isdigit() and 100 <= int(item) <= 599)))
        if not ok:
            bad("expect_status", f"'{item}' is not a status code (100-599) or class like '2xx'")
    for attr in ("headers", "query"):
        for key, value in (getattr(job, attr) or {}).items():
            if not isinstance(value, str | int | float | bool):
                bad(f"{attr}.{key}", f"{attr} values must be strings or numbers")


def _check_workflow(workflow_name: str, job: Any, bad: Bad) -> None:
    if not job.workflow:
        bad("workflow", "a workflow job needs 'workflow' (the name of the workflow to run)")
    elif not WORKFLOW_NAME_RE.match(job.workflow):
        bad("workflow", f"'{job.workflow}' is not a workflow name")
    elif job.workflow == workflow_name:
        bad("workflow", f"workflow '{workflow_name}' calls itself")
    for key in job.inputs or {}:
        if key == "flowforge_trigger":
            bad(f"inputs.{key}", f"input name '{key}' is reserved")


def _check_message(job: Any, bad: Bad) -> None:
    for k, url in enumerate([job.to] if isinstance(job.to, str) else (job.to or [])):
        if templates.is_template(url) or "://" in url or _secrets.SECRET_NAME_RE.match(url):
            continue
        bad(f"to[{k}]" if isinstance(job.to, list) else "to",
            f"'{url[:80]}' is neither an apprise URL (scheme://...) nor the name of a stored "
            "notification target (a secret)")


def secret_problem(field: str, job_type: str | None, source: str) -> str | None:
    """Why a template may not read the secrets it names here, or None if it may (or reads none).

    `field` is the document path (`jobs[2].headers.Authorization`); `job_type` None means a
    workflow-level field such as `outputs`.
    """
    names = _secrets.secret_refs(source)  # TemplateError for computed names
    if not names:
        return None
    attr = field.split(".", 1)[1].split(".", 1)[0].split("[", 1)[0] if job_type else field
    allowed = SECRET_FIELDS.get(job_type or "", set())
    if attr not in allowed:
        where = ", ".join(sorted(allowed)) or "job fields"
        return f"secrets cannot be used in '{attr}' (only in {where}), so they are never published"
    for name in sorted(names):
        if not _secrets.SECRET_NAME_RE.match(name):
            return (f"'{name}' is not a secret name (lowercase letters, digits and '-')")
    return None


def job_secret_names(job: Any) -> set[str]:
    """Every secret a job's templates name (what the job loads before it runs)."""
    names: set[str] = set()
    for attr in ("env", "to", *TEMPLATE_ATTRS, "body"):
        if attr == "body" and job.type != "http":
            continue
        names |= _secrets.template_secret_refs(template_value(job, attr))
    return names


__all__ = ["KIND_FIELDS", "LABELS", "SECRET_FIELDS", "TEMPLATE_ATTRS", "HttpAuth", "check_kind",
           "job_secret_names", "secret_problem", "template_value"]
