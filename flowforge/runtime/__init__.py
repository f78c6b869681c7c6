"""What runs inside a flow run: the job task, the run-if gate, templates, executors, helpers.

Generated flows import only this package. Nothing here imports `api/`, SQLModel or FastAPI, so
a worker needs neither the FlowForge database nor its API. Imports are lazy so that the spec
and the API can use the gate and templates without paying for Prefect's import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "WorkflowRun": "flowforge.runtime.run",
    "load_spec": "flowforge.runtime.run",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)


__all__ = sorted(_EXPORTS)
