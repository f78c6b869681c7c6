"""Where SSH servers are kept: the records, credentials and breaker state a worker reads.

`ServerDirectory` is what connecting needs; `PrefectDirectory` keeps everything in Prefect
variables and Secret blocks under the names in `flowforge.core.servers` (a worker reads them
with Prefect's own client, the API with its control-plane client), and `MemoryDirectory`
serves tests and benchmarks that talk to sshd without Prefect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, suppress
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from flowforge.connectors.prefect_store import put_variable, variables_by_prefix
from flowforge.core.errors import SshError
from flowforge.core.names import DEFAULT_NAMESPACE
from flowforge.core.servers import (
    BREAKER_PREFIX,
    RECORD_PREFIX,
    SECRET_PREFIX,
    BreakerState,
    Credential,
    ServerRecord,
)


class ServerDirectory(Protocol):
    """Where the executor finds servers, pins keys and keeps breaker state."""

    async def server(self, name: str) -> tuple[ServerRecord, Credential]: ...

    async def names_with_tag(self, tag: str, namespace: str = DEFAULT_NAMESPACE) -> list[str]: ...

    async def pin_host_key(self, name: str, host_key: str) -> None: ...

    async def breaker(self, name: str) -> BreakerState: ...

    async def save_breaker(self, name: str, state: BreakerState) -> None: ...


log = logging.getLogger("flowforge.servers")
_M = TypeVar("_M", bound=BaseModel)


def _valid(model: type[_M], value: Any, name: str) -> _M | None:
    """A stored record as `model`, or None (logged) when it is not one: a record written by
    hand in Prefect must not make every server unreadable."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        log.warning("server %r: its stored %s is not valid and is ignored (%d problems)",
                    name, model.__name__, exc.error_count())
        return None


def _unknown(name: str) -> SshError:
    return SshError("no_server", f"server '{name}' is not registered (POST /servers creates it)")


class MemoryDirectory:
    """Servers held in this process only: for tests and benchmarks without Prefect."""

    def __init__(self, servers: dict[str, tuple[ServerRecord, Credential]] | None = None) -> None:
        self.servers = dict(servers or {})
        self.breakers: dict[str, BreakerState] = {}

    def add(self, record: ServerRecord, credential: Credential) -> None:
        self.servers[record.name] = (record, credential)

    async def server(self, name: str) -> tuple[ServerRecord, Credential]:
        try:
            return self.servers[name]
        except KeyError:
            raise _unknown(name) from None

    async def names_with_tag(self, tag: str, namespace: str = DEFAULT_NAMESPACE) -> list[str]:
        return sorted(n for n, (r, _) in self.servers.items()
                      if tag in r.tags and r.namespace == namespace)

    async def pin_host_key(self, name: str, host_key: str) -> None:
        record, credential = self.servers[name]
        self.servers[name] = (record.model_copy(update={"host_key": host_key}), credential)

    async def breaker(self, name: str) -> BreakerState:
        return self.breakers.get(name, BreakerState())

    async def save_breaker(self, name: str, state: BreakerState) -> None:
        self.breakers[name] = state


ClientFactory = Callable[[], AbstractAsyncContextManager[Any]]


def _default_client() -> AbstractAsyncContextManager[Any]:
    from prefect.client.orchestration import get_client

    return get_client()


class PrefectDirectory:
    """Server records, credentials and breaker state in Prefect variables and Secret blocks.

    `client` makes an async Prefect client; the worker uses Prefect's own (configured by the
    flow run's environment), the API its `prefect_client(target)`.
    """

    def __init__(self, client: ClientFactory = _default_client) -> None:
        self._client = client

    # -- reading (worker and API) -----------------------------------------------------------

    async def record(self, name: str) -> ServerRecord | None:
        async with self._client() as client:
            variable = await client.read_variable_by_name(RECORD_PREFIX + name)
        return None if variable is None else _valid(ServerRecord, variable.value, name)

    async def server(self, name: str) -> tuple[ServerRecord, Credential]:
        from prefect.blocks.system import Secret

        record = await self.record(name)
        if record is None:
            raise _unknown(name)
        try:
            block: Any = await Secret.aload(SECRET_PREFIX + name)
        except ValueError as exc:  # Prefect's "Unable to find block document named ..."
            raise SshError("no_server", f"server '{name}' has no stored credential; "
                           f"PUT /servers/{name} with a private_key or password") from exc
        return record, Credential.model_validate(block.get())

    async def records(self) -> dict[str, ServerRecord]:
        found = await self._by_prefix(RECORD_PREFIX)
        records = {name: _valid(ServerRecord, value, name) for name, value in found.items()}
        return {name: record for name, record in records.items() if record is not None}

    async def breakers(self) -> dict[str, BreakerState]:
        found = await self._by_prefix(BREAKER_PREFIX)
        return {name: _valid(BreakerState, value, name) or BreakerState()
                for name, value in found.items()}

    async def _by_prefix(self, prefix: str) -> dict[str, Any]:
        async with self._client() as client:
            return await variables_by_prefix(client, prefix)

    async def names_with_tag(self, tag: str, namespace: str = DEFAULT_NAMESPACE) -> list[str]:
        return sorted(name for name, record in (await self.records()).items()
                      if tag in record.tags and record.namespace == namespace)

    async def breaker(self, name: str) -> BreakerState:
        async with self._client() as client:
            variable = await client.read_variable_by_name(BREAKER_PREFIX + name)
        return BreakerState() if variable is None else (
            _valid(BreakerState, variable.value, name) or BreakerState())

    # -- writing ----------------------------------------------------------------------------

    async def _put(self, key: str, value: Any) -> None:
        async with self._client() as client:
            await put_variable(client, key, value)

    async def pin_host_key(self, name: str, host_key: str) -> None:
        record = await self.record(name)
        if record is not None and not record.host_key:
            record.host_key = host_key
            await self._put(RECORD_PREFIX + name, record.model_dump(mode="json"))

    async def save_breaker(self, name: str, state: BreakerState) -> None:
        await self._put(BREAKER_PREFIX + name, state.model_dump(mode="json"))

    async def save(self, record: ServerRecord, credential: Credential | None) -> None:
        """Store a server; `credential=None` keeps the one stored before."""
        from prefect.blocks.system import Secret

        if credential is not None:
            async with self._client() as client:
                await Secret(value=credential.model_dump(exclude_none=True)).asave(
                    SECRET_PREFIX + record.name, overwrite=True, client=client)
        await self._put(RECORD_PREFIX + record.name, record.model_dump(mode="json"))

    async def delete(self, name: str) -> None:
        """Forget a server everywhere in Prefect; parts already gone are not an error."""
        from prefect.exceptions import ObjectNotFound

        async with self._client() as client:
            for variable in (RECORD_PREFIX + name, BREAKER_PREFIX + name):
                with suppress(ObjectNotFound):
                    await client.delete_variable_by_name(variable)
            try:
                document = await client.read_block_document_by_name(
                    SECRET_PREFIX + name, "secret", include_secrets=False)
                await client.delete_block_document(document.id)
            except ObjectNotFound:
                pass


async def resolve(directory: ServerDirectory, servers: list[str], tags: list[str],
                  namespace: str = DEFAULT_NAMESPACE) -> list[str]:
    """The servers a target names, listed ones first, then those of the job's namespace that
    carry any of the tags (named servers were checked against the defining key already)."""
    names = list(servers)
    for found in await asyncio.gather(*(directory.names_with_tag(t, namespace) for t in tags)):
        names.extend(n for n in found if n not in names)
    if not names:
        raise SshError("no_server", "no registered server carries the tag"
                       f"{'s' if len(tags) > 1 else ''} {', '.join(tags)}")
    return names


__all__ = ["MemoryDirectory", "PrefectDirectory", "ServerDirectory", "resolve"]
