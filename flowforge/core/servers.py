"""SSH server records: what a server is, how to log in to it, and its circuit breaker's state.

A worker must turn `servers: [web1]` or `tags: [web]` into a connection without FlowForge's
database, so each server lives in Prefect under these names:

- the variable `flowforge-server-<name>`: the non-secret record (host, port, username, host
  key, policy, tags), read by a name-prefix filter when a job resolves tags;
- the Secret block `flowforge-ssh-<name>`: the credential as JSON, encrypted at rest by Prefect;
- the variable `flowforge-breaker-<name>`: the breaker's state, shared by every run and worker.

The storage itself is `flowforge.connectors.servers`; these are the shapes both sides agree on.
"""

from __future__ import annotations

import time
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from flowforge.core.names import DEFAULT_NAMESPACE, SERVER_NAME_RE

RECORD_PREFIX: Final = "flowforge-server-"
BREAKER_PREFIX: Final = "flowforge-breaker-"
SECRET_PREFIX: Final = "flowforge-ssh-"

HostKeyPolicy = Literal["strict", "accept-new"]


class ServerRecord(BaseModel):
    """Everything about a server but its credential; safe to show and to log."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=SERVER_NAME_RE.pattern)
    #: Whose it is: a job resolves tags among its own namespace's servers only.
    namespace: str = DEFAULT_NAMESPACE
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(default=22, ge=1, le=65535)
    username: str = Field(min_length=1, max_length=64)
    #: The server's public host key (`ssh-ed25519 AAAA…`) or a known_hosts line.
    host_key: str | None = Field(default=None, max_length=4096)
    host_key_policy: HostKeyPolicy = "strict"
    tags: list[str] = Field(default_factory=list)


class Credential(BaseModel):
    """How to log in: a private key (with its passphrase if it has one), or a password."""

    model_config = ConfigDict(extra="ignore")

    private_key: str | None = None
    passphrase: str | None = None
    password: str | None = None

    def values(self) -> list[str]:
        """The secret strings, for the run's masker."""
        return [v for v in (self.private_key, self.passphrase, self.password) if v]


class BreakerState(BaseModel):
    """Consecutive connect failures, and until when (epoch seconds) connects fail fast."""

    failures: int = 0
    open_until: float | None = None
    last_error: str | None = None

    def is_open(self, now: float | None = None) -> bool:
        return self.open_until is not None and (now or time.time()) < self.open_until


__all__ = [
    "BREAKER_PREFIX",
    "RECORD_PREFIX",
    "SECRET_PREFIX",
    "BreakerState",
    "Credential",
    "HostKeyPolicy",
    "ServerRecord",
]
