"""Http jobs: one HTTP request with httpx, expected statuses, and retries on 5xx only.

Retries live here rather than in Prefect's task retries because only some failures are worth
repeating: a 5xx or a connection error may pass, a 404 or a 401 will not, and repeating a
non-idempotent POST that the server refused would be wrong. Waits grow exponentially from
`retry_delay` (default 0.5 s), capped at 30 s. `timeout` bounds each attempt.

Every connection goes through the egress guard (`connectors.egress`): loopback, private,
link-local and metadata addresses are refused after DNS and on every redirect, unless
FLOWFORGE_EGRESS_ALLOW lists them.

The output is `{"status", "headers", "body"}`, the body parsed when the response says it is
JSON, and cut at `MAX_BODY_BYTES` (then `"truncated": true` is added) so a large download does
not bloat the run summary. A status outside `expect_status` fails the job with the status and
the head of the body in the error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from flowforge.connectors import egress
from flowforge.core.errors import JobError
from flowforge.core.jobs import HttpJob
from flowforge.runtime.kinds.base import JobContext, KindResult
from flowforge.runtime.settings import WorkerSettings

MAX_BODY_BYTES: Final = 256 * 1024
ERROR_BODY_CHARS: Final = 300
DEFAULT_TIMEOUT: Final = 30.0
MAX_BACKOFF: Final = 30.0


@dataclass
class HttpRequest:
    """One request with every template already resolved."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    json_body: Any = None
    has_json: bool = False
    body: str | None = None
    auth: dict[str, Any] | None = None
    timeout: float | None = None
    expect_status: list[int | str] | int | str | None = None
    retries: int = 0
    retry_delay: float = 0.0
    follow_redirects: bool = False


def status_expected(status: int, expect: list[int | str] | int | str | None) -> bool:
    """Whether `status` is one of `expect`: codes (`200`) or classes (`"2xx"`); default 2xx."""
    if expect is None:
        return 200 <= status < 300
    for item in expect if isinstance(expect, list) else [expect]:
        if isinstance(item, int) and status == item:
            return True
        if isinstance(item, str) and item.lower().endswith("xx") and str(status)[0] == item[0]:
            return True
        if isinstance(item, str) and item.isdigit() and status == int(item):
            return True
    return False


def describe_expect(expect: list[int | str] | int | str | None) -> str:
    if expect is None:
        return "2xx"
    return ", ".join(str(e) for e in (expect if isinstance(expect, list) else [expect]))


def _auth(auth: dict[str, Any] | None) -> tuple[httpx.Auth | None, dict[str, str]]:
    if not auth:
        return None, {}
    if auth.get("type") == "basic":
        return httpx.BasicAuth(str(auth.get("username") or ""), str(auth.get("password") or "")), {}
    return None, {"Authorization": f"Bearer {auth.get('token') or ''}"}


def _read_body(response: httpx.Response) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return b"".join(chunks)[:MAX_BODY_BYTES], True
    return b"".join(chunks), False


def _decode(response: httpx.Response, raw: bytes, truncated: bool) -> Any:
    text = raw.decode(response.encoding or "utf-8", errors="replace")
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not truncated and (content_type == "application/json" or content_type.endswith("+json")):
        try:
            return json.loads(text) if text.strip() else None
        except ValueError:
            return text
    return text


def _head(body: Any) -> str:
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text[:ERROR_BODY_CHARS]


MAX_REDIRECTS: Final = 10


def send(request: HttpRequest, log: Callable[[str], None],
         transport: httpx.BaseTransport | None = None,
         allow: str | None = None) -> dict[str, Any]:
    """Send the request (retrying 5xx and connection errors) with egress guarded, `allow`
    (FLOWFORGE_EGRESS_ALLOW's notation) excepted; return the job's output."""
    try:
        rules = egress.parse_allow(allow)
    except ValueError as exc:
        raise JobError(str(exc)) from None
    with egress.guarded(rules) as guard:
        try:
            return _send(request, log, transport)
        except JobError:
            if guard.refused:
                raise JobError(guard.refused) from None
            raise


def _send(request: HttpRequest, log: Callable[[str], None],
          transport: httpx.BaseTransport | None) -> dict[str, Any]:
    method = request.method.upper()
    auth, auth_headers = _auth(request.auth)
    headers = {**auth_headers, **request.headers}
    kwargs: dict[str, Any] = {"headers": headers, "params": request.query or None}
    if request.has_json:
        kwargs["json"] = request.json_body
    elif request.body is not None:
        kwargs["content"] = request.body.encode()
    timeout = request.timeout or DEFAULT_TIMEOUT
    attempts = request.retries + 1
    delay = request.retry_delay or 0.5
    with httpx.Client(timeout=timeout, auth=auth, transport=transport,
                      follow_redirects=request.follow_redirects,
                      max_redirects=MAX_REDIRECTS) as client:
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                with client.stream(method, request.url, **kwargs) as response:
                    raw, truncated = _read_body(response)
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:  # will not get better
                raise JobError(f"{method} {request.url[:200]}: {exc}") from exc
            except httpx.TimeoutException as exc:
                problem = f"timed out after {timeout:g}s ({type(exc).__name__})"
            except httpx.TransportError as exc:
                problem = f"connection error: {type(exc).__name__}: {exc}"
            except httpx.HTTPError as exc:  # an invalid URL or request: not worth repeating
                raise JobError(f"{method} request failed: {type(exc).__name__}: {exc}") from exc
            else:
                body = _decode(response, raw, truncated)
                if response.status_code >= 500 and not last and not status_expected(
                        response.status_code, request.expect_status):
                    problem = f"status {response.status_code}"
                else:
                    if not status_expected(response.status_code, request.expect_status):
                        raise JobError(
                            f"{method} {response.url.copy_with(query=None)} answered "
                            f"{response.status_code} (expected {describe_expect(request.expect_status)}"
                            f"): {_head(body)}")
                    output: dict[str, Any] = {"status": response.status_code,
                                              "headers": dict(response.headers), "body": body}
                    if truncated:
                        output["truncated"] = True
                    log(f"{method} answered {response.status_code} after {attempt} attempt(s)")
                    return output
            if last:
                raise JobError(f"{method} request failed after {attempts} attempt(s): {problem}")
            wait = min(delay * 2 ** (attempt - 1), MAX_BACKOFF)
            log(f"attempt {attempt} of {attempts}: {problem}; retrying in {wait:g}s")
            time.sleep(wait)
    raise AssertionError("unreachable")  # the loop always returns or raises


def run(ctx: JobContext) -> KindResult:
    job = ctx.job
    assert isinstance(job, HttpJob)
    request = HttpRequest(
        method=(job.method or "GET").upper(),
        url=ctx.text("url", job.url),
        headers={k: ctx.text(f"headers.{k}", v) for k, v in (job.headers or {}).items()},
        query={k: ctx.text(f"query.{k}", v) for k, v in (job.query or {}).items()},
        json_body=ctx.render("json", job.json_body),
        has_json=job.json_body is not None,
        body=None if job.body is None else ctx.text("body", job.body),
        auth=None if job.auth is None else ctx.render(
            "auth", job.auth.model_dump(exclude_none=True)),
        timeout=job.timeout,
        expect_status=job.expect_status,
        retries=job.retries,
        retry_delay=job.retry_delay,
        follow_redirects=job.follow_redirects,
    )
    return send(request, ctx.info, allow=WorkerSettings().egress_allow), None


__all__ = ["HttpRequest", "describe_expect", "run", "send", "status_expected"]
