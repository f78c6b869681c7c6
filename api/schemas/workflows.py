"""Workflows as the API takes and shows them, and what a sync reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel


class SyncStatus(BaseModel):
    status: Literal["synced", "pending", "error"]
    error: str | None = None
    deployment_id: str | None = None


class DeletionPending(BaseModel):
    """A workflow deleted in FlowForge whose removal from Prefect did not finish yet."""

    name: str
    sync: SyncStatus
    detail: str


class WorkflowSummary(BaseModel):
    name: str
    namespace: str = "default"
    description: str | None
    version: int
    spec_hash: str
    jobs: int
    sync: SyncStatus
    updated_at: datetime


class WorkflowPublic(WorkflowSummary):
    created_at: datetime
    spec: dict[str, Any]


class ValidationReport(BaseModel):
    valid: bool
    spec_hash: str
    order: list[str]
    sequential: bool


class SyncItem(BaseModel):
    name: str
    status: str
    error: str | None = None


class SyncReport(BaseModel):
    workflows: list[SyncItem]


__all__ = ["DeletionPending", "SyncItem", "SyncReport", "SyncStatus", "ValidationReport",
           "WorkflowPublic", "WorkflowSummary"]
