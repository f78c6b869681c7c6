"""Secrets, variables and concurrency limits: names checked, then kept in Prefect.

Prefect is the only store of each (`flowforge.controlplane.store`), so workers read them
without FlowForge. Names that FlowForge uses itself (SSH server credentials) are refused here.
"""

from __future__ import annotations

from typing import Any

from api.schemas.store import LimitPublic, SecretName, VariablePublic
from flowforge.controlplane import store
from flowforge.controlplane.client import PrefectTarget, prefect_client
from flowforge.core.errors import InvalidRequestError
from flowforge.core.names import LIMIT_NAME_RE, SECRET_NAME_RE
from flowforge.core.servers import SECRET_PREFIX as SSH_SECRET_PREFIX
from flowforge.core.variables import name_problem, value_problem


def secret_name(name: str) -> str:
    if not SECRET_NAME_RE.match(name):
        raise InvalidRequestError("name", f"secret name '{name[:80]}' must be 1-100 lowercase "
                                  "letters, digits and '-', starting with a letter or digit")
    if name.startswith(SSH_SECRET_PREFIX):
        raise InvalidRequestError("name", f"names starting with '{SSH_SECRET_PREFIX}' hold SSH "
                                  "server credentials; use /servers")
    return name


def variable_key(key: str) -> str:
    problem = name_problem(key)
    if problem:
        raise InvalidRequestError("key", problem)
    return key


def limit_name(name: str) -> str:
    if not LIMIT_NAME_RE.match(name):
        raise InvalidRequestError("name", f"'{name[:100]}' is not a concurrency limit name "
                                  "(lowercase letters, digits, '_', '.', '-')")
    return name


async def list_secrets(target: PrefectTarget, limit: int, offset: int) -> list[SecretName]:
    async with prefect_client(target) as client:
        return [SecretName(name=n) for n in await store.secret_names(client, limit, offset)]


async def put_secret(target: PrefectTarget, name: str, value: str) -> SecretName:
    secret_name(name)
    async with prefect_client(target) as client:
        await store.put_secret(client, name, value)
    return SecretName(name=name)


async def delete_secret(target: PrefectTarget, name: str) -> None:
    secret_name(name)
    async with prefect_client(target) as client:
        await store.delete_secret(client, name)


async def list_variables(target: PrefectTarget, limit: int, offset: int) -> list[VariablePublic]:
    async with prefect_client(target) as client:
        found = await store.list_variables(client, limit, offset)
    return [VariablePublic(key=v.name, value=v.value) for v in found]


async def get_variable(target: PrefectTarget, key: str) -> VariablePublic:
    async with prefect_client(target) as client:
        return VariablePublic(key=key, value=await store.get_variable(client, variable_key(key)))


async def put_variable(target: PrefectTarget, key: str, value: Any) -> VariablePublic:
    """Create or replace a variable (last writer wins)."""
    problem = value_problem(value)
    if problem:
        raise InvalidRequestError("value", problem)
    async with prefect_client(target) as client:
        await store.put(client, variable_key(key), value)
    return VariablePublic(key=key, value=value)


async def delete_variable(target: PrefectTarget, key: str) -> None:
    async with prefect_client(target) as client:
        await store.delete_variable(client, variable_key(key))


def _limit(found: Any) -> LimitPublic:
    return LimitPublic(name=found.name, limit=found.limit, active_slots=found.active_slots,
                       active=found.active)


async def list_limits(target: PrefectTarget, limit: int, offset: int) -> list[LimitPublic]:
    async with prefect_client(target) as client:
        return [_limit(f) for f in await store.list_limits(client, limit, offset)]


async def get_limit(target: PrefectTarget, name: str) -> LimitPublic:
    async with prefect_client(target) as client:
        return _limit(await store.get_limit(client, limit_name(name)))


async def put_limit(target: PrefectTarget, name: str, slots: int) -> LimitPublic:
    async with prefect_client(target) as client:
        return _limit(await store.put_limit(client, limit_name(name), slots))


__all__ = ["delete_secret", "delete_variable", "get_limit", "get_variable", "limit_name",
           "list_limits", "list_secrets", "list_variables", "put_limit", "put_secret",
           "put_variable", "secret_name", "variable_key"]
