"""Secrets, variables and concurrency limits: names checked, then kept in Prefect.

Prefect is the only store of each (`flowforge.controlplane.store`), so workers read them
without FlowForge. Secrets and variables belong to a namespace (`?namespace=`, `default` when
not given): in Prefect a name of namespace `team` is `team--name`, of `default` the bare name,
and a key sees only its namespaces'. Names FlowForge uses itself (`flowforge-...`: SSH server
records and credentials) can be neither read nor written here.
"""

from __future__ import annotations

from typing import Any

from api.auth import Principal
from api.middleware import note
from api.schemas.store import LimitPublic, SecretName, VariablePublic
from flowforge.controlplane import store
from flowforge.controlplane.client import PrefectTarget, prefect_client
from flowforge.core.errors import InvalidRequestError, NotFoundError
from flowforge.core.names import (
    LIMIT_NAME_RE,
    NAMESPACE_RE,
    SECRET_NAME_RE,
    reserved_name_problem,
    split_stored_name,
    stored_name,
)
from flowforge.core.variables import name_problem, value_problem


def namespace_of(who: Principal, namespace: str) -> str:
    """The namespace a request acts in; another's is "not found" to a key that lacks it."""
    if not NAMESPACE_RE.match(namespace):
        raise InvalidRequestError("namespace", f"'{namespace[:80]}' is not a namespace name")
    if not who.sees(namespace):
        raise NotFoundError(f"namespace '{namespace}' not found", details={"namespace": namespace})
    note(namespace=namespace)
    return namespace


def secret_name(name: str) -> str:
    if not SECRET_NAME_RE.match(name):
        raise InvalidRequestError("name", f"secret name '{name[:80]}' must be 1-100 lowercase "
                                  "letters, digits and single '-', starting with a letter or "
                                  "digit")
    reserved = reserved_name_problem(name)
    if reserved:
        raise InvalidRequestError("name", f"{reserved}: SSH server credentials are set "
                                  "through /servers")
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


def _in(namespace: str, stored: str) -> str | None:
    """The name a user gave, of a name stored in Prefect, if it belongs to `namespace`."""
    found = split_stored_name(stored)
    return found[1] if found is not None and found[0] == namespace else None


async def list_secrets(target: PrefectTarget, who: Principal, namespace: str, limit: int,
                       offset: int) -> list[SecretName]:
    namespace = namespace_of(who, namespace)
    names: list[str] = []
    async with prefect_client(target) as client:
        async for stored in store.iter_secret_names(client):
            if (name := _in(namespace, stored)) is not None:
                names.append(name)
    return [SecretName(name=n, namespace=namespace) for n in sorted(names)[offset:offset + limit]]


async def put_secret(target: PrefectTarget, who: Principal, namespace: str, name: str,
                     value: str) -> SecretName:
    namespace = namespace_of(who, namespace)
    note(target=f"secret:{secret_name(name)}")
    async with prefect_client(target) as client:
        await store.put_secret(client, stored_name(namespace, name), value)
    return SecretName(name=name, namespace=namespace)


async def delete_secret(target: PrefectTarget, who: Principal, namespace: str, name: str) -> None:
    namespace = namespace_of(who, namespace)
    note(target=f"secret:{secret_name(name)}")
    async with prefect_client(target) as client:
        await store.delete_secret(client, stored_name(namespace, name))


async def list_variables(target: PrefectTarget, who: Principal, namespace: str, limit: int,
                         offset: int) -> list[VariablePublic]:
    namespace = namespace_of(who, namespace)
    found: list[VariablePublic] = []
    async with prefect_client(target) as client:
        async for variable in store.iter_variables(client):
            if (key := _in(namespace, variable.name)) is not None:
                found.append(VariablePublic(key=key, value=variable.value, namespace=namespace))
    return sorted(found, key=lambda v: v.key)[offset:offset + limit]


async def get_variable(target: PrefectTarget, who: Principal, namespace: str,
                       key: str) -> VariablePublic:
    namespace = namespace_of(who, namespace)
    async with prefect_client(target) as client:
        value = await store.get_variable(client, stored_name(namespace, variable_key(key)))
    return VariablePublic(key=key, value=value, namespace=namespace)


async def put_variable(target: PrefectTarget, who: Principal, namespace: str, key: str,
                       value: Any) -> VariablePublic:
    """Create or replace a variable (last writer wins)."""
    namespace = namespace_of(who, namespace)
    note(target=f"variable:{variable_key(key)}")
    problem = value_problem(value)
    if problem:
        raise InvalidRequestError("value", problem)
    async with prefect_client(target) as client:
        await store.put(client, stored_name(namespace, key), value)
    return VariablePublic(key=key, value=value, namespace=namespace)


async def delete_variable(target: PrefectTarget, who: Principal, namespace: str,
                          key: str) -> None:
    namespace = namespace_of(who, namespace)
    note(target=f"variable:{variable_key(key)}")
    async with prefect_client(target) as client:
        await store.delete_variable(client, stored_name(namespace, key))


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
    note(target=f"concurrency-limit:{limit_name(name)}")
    async with prefect_client(target) as client:
        return _limit(await store.put_limit(client, limit_name(name), slots))


__all__ = ["delete_secret", "delete_variable", "get_limit", "get_variable", "limit_name",
           "list_limits", "list_secrets", "list_variables", "namespace_of", "put_limit",
           "put_secret", "put_variable", "secret_name", "variable_key"]
