"""SSH servers as the API takes and shows them; credentials are write-only."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from flowforge.core.names import SERVER_NAME_RE

NAME = SERVER_NAME_RE.pattern
MAX_KEY_CHARS = 16 * 1024


class ServerBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=255)
    port: int = Field(default=22, ge=1, le=65535)
    username: str = Field(min_length=1, max_length=64)
    host_key: str | None = Field(default=None, max_length=4096,
                                 description="the server's public host key or a known_hosts line")
    host_key_policy: Literal["strict", "accept-new"] = "strict"
    tags: list[str] = Field(default_factory=list, max_length=50)


class ServerCredentials(BaseModel):
    private_key: str | None = Field(default=None, max_length=MAX_KEY_CHARS)
    passphrase: str | None = Field(default=None, max_length=1024)
    password: str | None = Field(default=None, max_length=1024)


class ServerCreate(ServerBase, ServerCredentials):
    name: str = Field(pattern=NAME)
    namespace: str = Field("default", max_length=63, description="who may use and manage it")


class ServerUpdate(ServerBase, ServerCredentials):
    """A full replacement of the record; leave every credential field out to keep the stored one."""


class BreakerPublic(BaseModel):
    state: Literal["closed", "open", "half_open"]
    consecutive_failures: int
    open_until: str | None
    last_error: str | None


class ServerPublic(ServerBase):
    name: str
    namespace: str = "default"
    breaker: BreakerPublic
    created_at: datetime
    updated_at: datetime


class ServerTestResult(BaseModel):
    ok: bool
    latency_ms: float | None = None
    reason: str | None = Field(default=None, description="refused, timeout, unreachable, "
                               "auth_failed, host_key_unknown, host_key_mismatch")
    message: str | None = None
    host_key: str | None = Field(default=None, description="the key pinned by this test "
                                 "(host_key_policy accept-new, first contact)")


__all__ = ["BreakerPublic", "ServerBase", "ServerCreate", "ServerCredentials", "ServerPublic",
           "ServerTestResult", "ServerUpdate"]
