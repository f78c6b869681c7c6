"""API keys, namespaces and the audit log as the API takes and shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

RoleName = Literal["viewer", "runner", "editor", "admin"]


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: RoleName
    namespaces: list[str] = Field(default_factory=lambda: ["*"], min_length=1, max_length=100,
                                  description='["*"] for every namespace, else their names')
    expires_at: datetime | None = None


class KeyPublic(BaseModel):
    id: str
    name: str
    role: RoleName
    namespaces: list[str]
    prefix: str = Field(description="the key's first characters, to tell keys apart")
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class KeyCreated(KeyPublic):
    key: str = Field(description="the key itself: shown here once, never again")


class NamespacePut(BaseModel):
    isolation: Literal["none", "container"] = "none"
    policy: Policy = Field(default_factory=lambda: Policy())


class Policy(BaseModel):
    """What a document in the namespace must pass before it is stored (422 naming the job)."""

    allowed_images: list[str] | None = Field(None, description="container images jobs may use "
                                             "(exact names); None allows any")
    allow_host_network: bool = False
    allow_root: bool = False
    allow_writable_root: bool = False
    max_memory: str | None = Field("4g", description="the most memory a container job may "
                                   "ask for (None: no limit)")
    max_pids: int | None = Field(4096, ge=8, description="the most pids a container job may "
                                 "ask for (None: no limit)")
    max_for_each: int | None = Field(None, ge=1, description="items a for-each job may map")
    max_parallel_jobs: int | None = Field(None, ge=1)
    allowed_targets: list[str] | None = Field(None, description="target kinds jobs may use")


class NamespacePublic(BaseModel):
    name: str
    isolation: Literal["none", "container"]
    policy: Policy
    updated_at: datetime | None = None


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    actor_name: str | None
    action: str
    target: str | None
    namespace: str | None
    outcome: int
    request_id: str | None
    client: str | None


NamespacePut.model_rebuild()

__all__ = ["AuditEntry", "KeyCreate", "KeyCreated", "KeyPublic", "NamespacePublic",
           "NamespacePut", "Policy", "RoleName"]
