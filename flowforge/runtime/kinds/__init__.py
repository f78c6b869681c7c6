"""Job kinds at run time: `flowforge/runtime/kinds/<type>.py` runs jobs of that `type`.

Found by name and imported on first use, so a flow run pays for apprise's or psycopg's
import only when it has such jobs, and adding a kind needs no list to be edited here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from flowforge.core.errors import JobError
from flowforge.runtime.kinds.base import JobContext, KindResult

Runner = Callable[[JobContext], KindResult]


def runner(kind: str) -> Runner:
    """The `run` function of a kind's module; `JobError` when this worker has none."""
    try:
        module = importlib.import_module(f"{__name__}.{kind}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{kind}":
            raise
        raise JobError(f"job type '{kind}' cannot run on this worker (no runtime for it)"
                       ) from None
    run: Runner = module.run
    return run


__all__ = ["JobContext", "KindResult", "Runner", "runner"]
