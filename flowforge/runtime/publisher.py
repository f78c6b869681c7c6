"""Publishes a run's job summary to Prefect as an artifact, as the run goes and at its end.

Why an artifact: the flow run is the only party that knows every job's outcome the moment it
happens, and Prefect's task-run records trail behind under load. A `flowforge-run` artifact
attached to the flow run is readable by the API (and shown in the Prefect UI) without the worker
ever talking to FlowForge; its shape is `flowforge.core.wire.RunSummary`. Updates are
coalesced: at most one write per `interval`, plus a final synchronous one, so a 500-job run
does not make 500 API calls.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
)

from flowforge.core.wire import ARTIFACT_TYPE, RunSummary, read_summary
from flowforge.runtime.prefect_client import sync_client

MAX_OUTPUT_BYTES = 64 * 1024
log = logging.getLogger("flowforge.publisher")


def summary_output(output: Any) -> Any:
    """A job output as the summary carries it: as is, unless it is too large to publish."""
    if output is None:
        return None
    size = len(json.dumps(output, default=str))
    if size > MAX_OUTPUT_BYTES:
        return {"truncated": True, "bytes": size}
    return output


class Publisher:
    def __init__(self, flow_run_id: str, snapshot: Callable[[], RunSummary],
                 interval: float = 1.0) -> None:
        self.flow_run_id = flow_run_id
        self.snapshot = snapshot
        self.interval = interval
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._artifact_id: UUID | None = None
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # In the caller's context, so the writer uses the run's shared Prefect client.
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._loop,),
                                        name="flowforge-publisher", daemon=True)
        self._dirty.set()
        self._thread.start()

    def mark_dirty(self) -> None:
        self._dirty.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.is_set():
                return
            self._dirty.clear()
            self._write(self.snapshot())
            self._stop.wait(self.interval)

    def _write(self, summary: RunSummary) -> None:
        # Best effort while running: a missed intermediate update is repaired by the next one.
        data = summary.model_dump(mode="json")
        with self._write_lock:
            try:
                with sync_client() as client:
                    if self._artifact_id is None:
                        artifact = client.create_artifact(ArtifactCreate(
                            type=ARTIFACT_TYPE, data=data,
                            description="FlowForge run summary (jobs, states, outputs)",
                            flow_run_id=UUID(self.flow_run_id)))
                        self._artifact_id = artifact.id
                    else:
                        client.update_artifact(self._artifact_id, ArtifactUpdate(data=data))
            except Exception as exc:
                log.warning("could not publish the run summary: %s", exc)

    def close(self, final: RunSummary) -> None:
        """Stop the background writer and write the final summary, plus a table for people."""
        self._stop.set()
        self._dirty.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._write(final)
        rows = [{"job": j.name, "state": str(j.state), "started_at": j.started_at or "",
                 "ended_at": j.ended_at or "", "reason": j.reason or "",
                 "error": (j.error or "")[:300],
                 "output": json.dumps(j.output, default=str)[:300]} for j in final.jobs]
        try:
            with sync_client() as client:
                client.create_artifact(ArtifactCreate(
                    type="table", data=json.dumps(rows), flow_run_id=UUID(self.flow_run_id),
                    description=f"FlowForge jobs of this run: {final.state}"))
        except Exception as exc:
            log.warning("could not publish the table: %s", exc)


def read_run_summary(client: Any, flow_run_id: UUID) -> RunSummary | None:
    """The `flowforge-run` artifact of a flow run (its per-job summary and outputs), if any;
    `client` is a sync Prefect client."""
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=[ARTIFACT_TYPE]),
                                       flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
        limit=1)
    return read_summary(artifacts[0].data) if artifacts else None


__all__ = ["Publisher", "read_run_summary", "summary_output"]
