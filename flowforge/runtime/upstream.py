"""What a dependency-triggered run knows about the upstream runs that started it.

Prefect's automation renders the ids of the flow runs whose events fired it into the
`flowforge_trigger` parameter (`upstream_runs`, one per upstream for a `logic: all` trigger).
The run itself then reads each upstream's `flowforge-run` artifact (its outputs and state)
from Prefect, so templates can say `{{ trigger.upstream.<workflow>.outputs.x }}`. It reads
Prefect, never the FlowForge API: a worker needs nothing but Prefect.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from uuid import UUID

from flowforge.runtime.prefect_client import sync_client
from flowforge.runtime.publisher import read_run_summary

_RUN_ID = re.compile(r"prefect\.flow-run\.([0-9a-fA-F-]{36})")
log = logging.getLogger("flowforge.upstream")


def upstream_run_ids(trigger: dict[str, Any]) -> list[str]:
    raw = trigger.get("upstream_runs")
    if isinstance(raw, list):
        raw = " ".join(str(r) for r in raw)
    if not isinstance(raw, str):
        return []
    ids: list[str] = []
    for match in _RUN_ID.finditer(raw):
        if match.group(1) not in ids:
            ids.append(match.group(1))
    return ids


def enrich(trigger: dict[str, Any] | None) -> dict[str, Any] | None:
    """Add `upstream: {workflow: {run_id, state, outputs}}` to a dependency trigger's data."""
    if not trigger or trigger.get("type") != "dependency":
        return trigger
    ids = upstream_run_ids(trigger)
    out = {k: v for k, v in trigger.items() if k != "upstream_runs"}
    out["upstream_run_ids"] = ids
    upstream: dict[str, Any] = {}
    try:
        with sync_client() as client:
            for run_id in ids:
                flow_run = client.read_flow_run(UUID(run_id))
                summary = read_run_summary(client, UUID(run_id))
                name = summary.workflow if summary else client.read_flow(flow_run.flow_id).name
                state = summary.state if summary else (
                    flow_run.state_type.value if flow_run.state_type else None)
                upstream[name] = {"run_id": run_id, "state": state,
                                  "outputs": summary.outputs if summary else None}
    except Exception as exc:  # the run still starts; templates reading outputs then fail loudly
        log.warning("could not read the upstream runs %s: %s", ids, exc)
    out["upstream"] = upstream
    return out


__all__ = ["enrich", "upstream_run_ids"]
