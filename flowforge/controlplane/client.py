"""The Prefect client of the control plane: where Prefect is, and its errors translated once.

Every Prefect or transport failure met by the API, the sync or the CLI becomes a
`PrefectUnavailableError` (retryable) here, so callers mark a workflow out of sync or answer
503 without knowing httpx's or Prefect's exception types.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from flowforge.core.errors import PrefectUnavailableError


@dataclass(frozen=True)
class PrefectTarget:
    """Where and how workflows are deployed."""

    api_url: str
    project_dir: Path
    work_pool: str
    timeout: float = 10.0
    #: Seconds for everything done with one `prefect_client`, retries included; None: no cap.
    deadline: float | None = None
    #: The Prefect server's credential (`user:password`, Prefect's basic auth); None: open.
    auth_string: str | None = field(default=None, repr=False)
    #: Flow-run heartbeat interval the crash-detection automation expects (`crashes`).
    heartbeat_seconds: int = 30
    #: How long a write waits for Prefect's health check before it stores the definition
    #: `pending` for the sync loop instead of deploying (`reachable`).
    probe_timeout: float = 5.0


async def reachable(target: PrefectTarget) -> str | None:
    """None if Prefect answers its health check within `target.probe_timeout`, else what it
    did ("is unreachable: ...", "did not answer ...").

    A write asks first: a Prefect that is down or frozen would otherwise hold it for the whole
    `deadline` (two minutes, measured with the server stopped), retries included, though the
    sync loop deploys the stored definition once Prefect is back."""
    try:
        async with httpx.AsyncClient(timeout=target.probe_timeout) as client:
            response = await client.get(f"{target.api_url.rstrip('/')}/health")
    except httpx.TimeoutException:
        return f"did not answer its health check within {target.probe_timeout:g}s"
    except httpx.HTTPError as exc:
        return f"is unreachable: {exc or type(exc).__name__}"
    if response.status_code >= 500:
        return f"answered its health check with {response.status_code}"
    return None


@asynccontextmanager
async def prefect_client(target: PrefectTarget) -> AsyncIterator[PrefectClient]:
    """A Prefect client on `target.api_url`; transport and 5xx errors, and running past
    `target.deadline`, become retryable errors."""
    try:
        async with asyncio.timeout(target.deadline), PrefectClient(
                target.api_url, auth_string=target.auth_string,
                httpx_settings={"timeout": target.timeout}) as client:
            yield client
    except TimeoutError as exc:  # before OSError, of which it is a subclass
        within = f"within {target.deadline:g}s" if target.deadline is not None else "in time"
        raise PrefectUnavailableError(f"Prefect API at {target.api_url} did not finish answering "
                                      f"{within} (overloaded?); try again later") from exc
    except httpx.TimeoutException as exc:  # str() of these is empty: say what happened
        raise PrefectUnavailableError(
            f"Prefect API at {target.api_url} did not answer within {target.timeout:g}s, "
            f"retries included ({type(exc).__name__}; overloaded?); try again later") from exc
    except (httpx.TransportError, OSError) as exc:
        raise PrefectUnavailableError(f"Prefect API at {target.api_url} is unreachable: "
                                      f"{exc or type(exc).__name__}") from exc
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code >= 500:
            raise PrefectUnavailableError(
                f"Prefect API error {exc.response.status_code}: {exc.response.text[:200]}"
            ) from exc
        raise


@contextmanager
def prefect_settings(api_url: str, auth_string: str | None) -> Iterator[None]:
    """Prefect's own clients (`get_client`, deployments, events) pointed at this server, with
    its credential, for the code inside the block."""
    updates: dict[object, object] = {PREFECT_API_URL: api_url}
    if auth_string:
        updates[PREFECT_API_AUTH_STRING] = auth_string
    with temporary_settings(updates=updates):
        yield


__all__ = ["PrefectTarget", "prefect_client", "prefect_settings"]
