"""The workflow document: settings, inputs, jobs, outputs and triggers, and its graph.

This is the contract between the API, the compiler and the runtime. The graph helpers are
linear in the number of jobs and edges (a 10,000-job document is ordinary for a generated
fan-out); `Workflow.job()` is a scan, so code that looks up many jobs takes `jobs_by_name()`.
"""

from __future__ import annotations

import graphlib
import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flowforge.core.inputs import InputSpec
from flowforge.core.jobs import Job, JobBase, Need
from flowforge.core.names import DEFAULT_NAMESPACE
from flowforge.core.triggers import Trigger


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class WorkflowSettings(_Model):
    max_parallel_jobs: Annotated[int, Field(ge=1, le=1000)] = 10
    timeout: Annotated[float | None, Field(gt=0, le=30 * 86400)] = None
    fail_fast: bool = False
    execution: Literal["dag", "sequential"] | None = None
    work_pool: str | None = None
    # Whether container jobs may use `network: host` (the host's network, incl. 127.0.0.1).
    allow_host_network: bool = False
    max_concurrent_runs: Annotated[int | None, Field(ge=1, le=10000)] = None
    on_limit: Literal["queue", "cancel_new"] | None = None
    # A run that crashed (its worker or machine died): "repair" starts a repair of it by
    # itself (completed jobs' outputs reused), at most `max_repairs` (default 1) in a chain.
    on_crash: Literal["fail", "repair"] | None = None
    max_repairs: Annotated[int | None, Field(ge=1, le=10)] = None


class Workflow(_Model):
    name: str
    #: Who may see and run it: a key acts only in its namespaces. None is `default` (left out
    #: of the stored JSON, so documents from before namespaces keep their hash).
    namespace: str | None = None
    description: str | None = None
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    settings: WorkflowSettings = Field(default_factory=WorkflowSettings)
    jobs: list[Job]
    outputs: dict[str, Any] = Field(default_factory=dict)
    triggers: list[Trigger] = Field(default_factory=list)

    @property
    def ns(self) -> str:
        return self.namespace or DEFAULT_NAMESPACE

    def job(self, name: str) -> JobBase:
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)

    def jobs_by_name(self) -> dict[str, JobBase]:
        return {job.name: job for job in self.jobs}

    @property
    def is_sequential(self) -> bool:
        if self.settings.execution is not None:
            return self.settings.execution == "sequential"
        return not any(job.needs for job in self.jobs)


def effective_needs(wf: Workflow) -> dict[str, list[Need]]:
    """Each job's incoming edges, with the sequential fallback applied."""
    if wf.is_sequential and not any(job.needs for job in wf.jobs):
        out: dict[str, list[Need]] = {}
        for prev, job in zip([None, *wf.jobs[:-1]], wf.jobs, strict=True):
            out[job.name] = [Need(job=prev.name)] if prev is not None else []
        return out
    return {job.name: list(job.needs) for job in wf.jobs}


def topological_order(wf: Workflow, needs: dict[str, list[Need]] | None = None) -> list[str]:
    """Jobs in dependency order; ties broken by document order so output is byte-stable.

    Raises `graphlib.CycleError` for a cycle.
    """
    needs = effective_needs(wf) if needs is None else needs
    position = {job.name: i for i, job in enumerate(wf.jobs)}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for job in wf.jobs:
        sorter.add(job.name, *[n.job for n in needs[job.name]])
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order.extend(ready)
        sorter.done(*ready)
    return order


class Ancestry:
    """Which jobs each job depends on, directly or not, as one integer bit set per job.

    A set of names per job is quadratic in memory for a long chain (a 10,000-job chain held
    50 million set entries, 2.5 GB); a bit set of 10,000 bits is 1.25 kB, and a union is one
    integer `|` over machine words.
    """

    def __init__(self, wf: Workflow, needs: dict[str, list[Need]] | None = None,
                 order: list[str] | None = None) -> None:
        needs = effective_needs(wf) if needs is None else needs
        order = topological_order(wf, needs) if order is None else order
        self._bit = {name: 1 << i for i, name in enumerate(order)}
        self._ancestors: dict[str, int] = {}
        for name in order:
            acc = 0
            for need in needs[name]:
                acc |= self._ancestors[need.job] | self._bit[need.job]
            self._ancestors[name] = acc

    def depends_on(self, job: str, ancestor: str) -> bool:
        bit = self._bit.get(ancestor)
        return bit is not None and bool(self._ancestors[job] & bit)


def descendants(wf: Workflow, names: set[str]) -> set[str]:
    """`names` and every job that depends on one of them, directly or not."""
    children: dict[str, list[str]] = {job.name: [] for job in wf.jobs}
    for name, needs in effective_needs(wf).items():
        for need in needs:
            children[need.job].append(name)
    out, todo = set(names), list(names)
    while todo:
        for child in children[todo.pop()]:
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def spec_json(wf: Workflow) -> str:
    """Canonical JSON of a workflow: what is hashed, stored and written beside the flow."""
    return json.dumps(wf.model_dump(mode="json", exclude_none=True), sort_keys=True, indent=2) + "\n"


def spec_hash(wf: Workflow) -> str:
    return hashlib.sha256(spec_json(wf).encode()).hexdigest()[:16]


__all__ = [
    "Ancestry",
    "Workflow",
    "WorkflowSettings",
    "descendants",
    "effective_needs",
    "spec_hash",
    "spec_json",
    "topological_order",
]
