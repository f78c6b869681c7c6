"""Secrets, variables and concurrency limits as the API takes and shows them."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from flowforge.core.variables import MAX_VALUE_CHARS

MAX_SECRET_CHARS = 64 * 1024


class SecretBody(BaseModel):
    value: str = Field(..., min_length=1, max_length=MAX_SECRET_CHARS)


class SecretName(BaseModel):
    name: str
    namespace: str = "default"


class VariableBody(BaseModel):
    value: Any = Field(..., description=f"any JSON value, at most {MAX_VALUE_CHARS} characters "
                       "as JSON")


class VariablePublic(BaseModel):
    key: str
    value: Any
    namespace: str = "default"


class LimitBody(BaseModel):
    limit: Annotated[int, Field(ge=0, le=100000, description="slots; 0 holds every job back")]


class LimitPublic(BaseModel):
    name: str
    limit: int
    active_slots: int
    active: bool


__all__ = ["LimitBody", "LimitPublic", "SecretBody", "SecretName", "VariableBody",
           "VariablePublic"]
