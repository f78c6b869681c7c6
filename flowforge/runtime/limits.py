"""Named global concurrency limits held by a job (or by each item of a for-each job).

Prefect's global concurrency limits are the mechanism, so a limit such as `gpu` is shared by
every workflow and every worker that talks to the same Prefect server, and shows in its UI.
`strict=True`: the sync creates a missing limit, so one that is missing at run time was
deleted on purpose, and silently running without it would break the promise.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def hold(names: list[str] | None) -> Iterator[None]:
    """Hold one slot of each named limit while the block runs (waits for free slots)."""
    if not names:
        yield
        return
    from prefect.concurrency.sync import concurrency

    with concurrency(names, occupy=1, strict=True):
        yield


__all__ = ["hold"]
