"""Loading the secrets a job names, from Prefect `Secret` blocks, right before it runs.

A worker needs no FlowForge access for this: the blocks are Prefect's. Every value loaded is
handed to the run's masker by the caller (`flowforge.core.secretrefs.Masker`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flowforge.core import templates
from flowforge.core.errors import JobError


def load_secrets(names: Iterable[str]) -> dict[str, str]:
    """Read secret values from Prefect `Secret` blocks; a missing one fails the job by name."""
    from prefect.blocks.system import Secret

    values: dict[str, str] = {}
    for name in sorted(set(names)):
        try:
            # `_sync=True`: a job thread may run inside an event loop's context; we want the
            # blocking call, not a coroutine (Prefect's async_dispatch would guess otherwise).
            load: Any = Secret.load
            block = load(name, _sync=True)
        except ValueError as exc:  # Prefect's "Unable to find block document named ..."
            raise JobError(f"secret '{name}' does not exist (PUT /secrets/{name} creates it)"
                           ) from exc
        except Exception as exc:
            raise JobError(f"could not read secret '{name}': {type(exc).__name__}") from exc
        value = block.get()
        values[name] = value if isinstance(value, str) else templates.to_env_value(value)
    return values


__all__ = ["load_secrets"]
