"""Loading the secrets a job names, from Prefect `Secret` blocks, right before it runs.

A worker needs no FlowForge access for this: the blocks are Prefect's. Every value loaded is
handed to the run's masker by the caller (`flowforge.core.secretrefs.Masker`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flowforge.core import templates
from flowforge.core.errors import JobError
from flowforge.core.names import (
    DEFAULT_NAMESPACE,
    SECRET_NAME_RE,
    reserved_name_problem,
    stored_name,
)


def load_secrets(names: Iterable[str], namespace: str = DEFAULT_NAMESPACE) -> dict[str, str]:
    """Read the values of secrets of `namespace` from Prefect `Secret` blocks, by the names
    the job uses; a missing one fails the job by name, and so does one FlowForge keeps to
    itself (an SSH server's credential)."""
    from prefect.blocks.system import Secret

    values: dict[str, str] = {}
    for name in sorted(set(names)):
        reserved = reserved_name_problem(name)
        if reserved or not SECRET_NAME_RE.match(name):
            raise JobError(f"secret '{name}' cannot be read by a job: "
                           f"{reserved or 'not a secret name'}")
        try:
            # `_sync=True`: a job thread may run inside an event loop's context; we want the
            # blocking call, not a coroutine (Prefect's async_dispatch would guess otherwise).
            load: Any = Secret.load
            block = load(stored_name(namespace, name), _sync=True)
        except ValueError as exc:  # Prefect's "Unable to find block document named ..."
            where = "" if namespace == DEFAULT_NAMESPACE else f"?namespace={namespace}"
            raise JobError(f"secret '{name}' does not exist (PUT /secrets/{name}{where} "
                           "creates it)") from exc
        except Exception as exc:
            raise JobError(f"could not read secret '{name}': {type(exc).__name__}") from exc
        value = block.get()
        values[name] = value if isinstance(value, str) else templates.to_env_value(value)
    return values


__all__ = ["load_secrets"]
