"""`type: http`: one HTTP request, with expected statuses and retries on 5xx only."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from flowforge.core import templates
from flowforge.core.checks import Bad, CheckContext
from flowforge.core.jobs.base import JobBase

METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_STATUS_CLASS_RE: Final = re.compile(r"^[1-5]xx$", re.IGNORECASE)


class HttpAuth(BaseModel):
    """`{type: basic, username, password}` or `{type: bearer, token}`; values may be templates."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["basic", "bearer"]
    username: str | None = None
    password: str | None = None
    token: str | None = None


class HttpJob(JobBase):
    template_fields: ClassVar[tuple[str, ...]] = (
        "url", "headers", "query", "json_body", "auth", "body")
    secret_fields: ClassVar[frozenset[str]] = frozenset(
        {"env", "headers", "query", "auth", "json", "body"})
    # Only 5xx and connection errors are worth repeating, so the job retries by itself.
    prefect_retries: ClassVar[bool] = False

    type: Literal["http"] = "http"
    method: str | None = None
    url: str | None = None
    headers: dict[str, Any] | None = None
    query: dict[str, Any] | None = None
    json_body: Any = Field(default=None, alias="json")
    body: str | None = None
    auth: HttpAuth | None = None
    expect_status: list[int | str] | int | str | None = None
    # Follow 3xx answers (up to 10); each hop is checked by the egress guard again.
    follow_redirects: bool = False

    def check_kind(self, ctx: CheckContext, bad: Bad) -> None:
        method = (self.method or "GET").upper()
        if method not in METHODS:
            bad("method", f"unknown HTTP method '{self.method}'; expected one of "
                f"{', '.join(METHODS)}")
        if not self.url:
            bad("url", "an http job needs a 'url'")
        elif not templates.is_template(self.url) and not re.match(r"^https?://[^/\s]+", self.url):
            bad("url", f"'{self.url[:100]}' is not an http:// or https:// URL")
        if self.json_body is not None and self.body is not None:
            bad("json", "an http job takes 'json' or 'body', not both")
        auth = self.auth
        if auth is not None:
            if auth.type == "basic" and (auth.username is None or auth.password is None
                                         or auth.token):
                bad("auth", "basic auth takes 'username' and 'password'")
            if auth.type == "bearer" and (not auth.token or auth.username or auth.password):
                bad("auth", "bearer auth takes a 'token'")
        expect = self.expect_status
        for item in expect if isinstance(expect, list) else ([] if expect is None else [expect]):
            ok = (isinstance(item, int) and 100 <= item <= 599) or (
                isinstance(item, str) and (_STATUS_CLASS_RE.match(item)
                                           or (item.isdigit() and 100 <= int(item) <= 599)))
            if not ok:
                bad("expect_status", f"'{item}' is not a status code (100-599) or class like "
                    "'2xx'")
        for attr in ("headers", "query"):
            for key, value in (getattr(self, attr) or {}).items():
                if not isinstance(value, str | int | float | bool):
                    bad(f"{attr}.{key}", f"{attr} values must be strings or numbers")


__all__ = ["METHODS", "HttpAuth", "HttpJob"]
