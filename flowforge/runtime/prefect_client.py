"""One sync Prefect client per flow run, shared by every job's task thread.

Prefect's task engine needs a sync client for every task run. In a sync flow it finds one in
the `SyncClientContext` that the flow engine entered and the thread-pool runner copied into
the task's thread; in an async flow, which the generated flows are, there is none, so each task
run builds two `SyncPrefectClient`s, and each build loads the CA bundle into a new SSL context.
Profiled with py-spy on a 1,000-job DAG, that was the largest single CPU cost of the run (about
30 % of all samples), paid by hand-written async flows too. `WorkflowRun.start` therefore enters
a `SyncClientContext` in the flow body, before any job is submitted, which is what a sync flow
does; every task run, for-each item and FlowForge helper of the run then uses that one client
(httpx clients are thread-safe).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.context import SyncClientContext
from prefect.exceptions import ObjectNotFound


@contextmanager
def sync_client() -> Iterator[Any]:
    """The run's shared client when there is one, else a fresh client closed after use.

    The shared client is handed out without entering it again: its enter/exit count is a plain
    integer that concurrent threads could corrupt, closing the client under everyone else.
    """
    ctx = SyncClientContext.get()
    if ctx is not None:
        yield ctx.client
        return
    with get_client(sync_client=True) as client:
        yield client


def run_finished(run_id: str) -> bool:
    """Whether Prefect says the flow run is over (or never heard of it): what a reaper asks
    before it removes a run's leftovers.

    Any other error counts as not finished: a container is only removed when we are sure.
    """
    try:
        flow_run_id = UUID(run_id)
    except ValueError:
        return True
    try:
        with sync_client() as client:
            run = client.read_flow_run(flow_run_id)
    except ObjectNotFound:
        return True
    except Exception:
        return False
    return run.state is None or run.state.is_final()


def cancelled_before_start(run_id: str) -> bool:
    """Whether the flow run was cancelled since it was last scheduled, before it started.

    Prefect's worker marks a run cancelled while Pending as Cancelled outright when it does
    not yet know the run's process; that process then starts anyway, and Prefect lets a flow
    run leave Cancelled for Running (that is how its manual retries work). A run that was
    scheduled again after a cancel (a repair) has a Scheduled state after it and goes on.
    """
    with sync_client() as client:
        states = sorted(client.read_flow_run_states(UUID(run_id)), key=lambda s: s.timestamp)
    since_scheduled: list[StateType] = []
    for state in states:
        since_scheduled = [] if state.type == StateType.SCHEDULED else [*since_scheduled,
                                                                         state.type]
    return bool({StateType.CANCELLING, StateType.CANCELLED} & set(since_scheduled))


__all__ = ["cancelled_before_start", "run_finished", "sync_client"]
