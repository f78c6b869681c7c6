"""What every error answer looks like, and the error responses routes declare."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail




def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each status answers the error shape."""
    return {status: {"model": ErrorBody} for status in statuses}


__all__ = ["ErrorBody", "ErrorDetail", "errors"]
