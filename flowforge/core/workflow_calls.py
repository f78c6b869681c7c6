"""Checks of `workflow` jobs against the other stored workflows: targets, inputs, call cycles.

The spec alone can only see a workflow calling itself directly; a cycle through others
(a -> b -> a) and a call to a workflow that does not exist need the stored definitions, which
the API passes in. A call cycle would start sub-runs without end (each waiting for the next),
so it is refused at validation with the whole path named. Pure functions: the API owns the
database, this module only the rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flowforge.core.jobs import WorkflowJob

if TYPE_CHECKING:
    from flowforge.core.workflow import Workflow


def calls(wf: Workflow) -> list[tuple[int, str, str]]:
    """`(job index, job name, called workflow)` for every workflow job of `wf`."""
    return [(i, job.name, job.workflow) for i, job in enumerate(wf.jobs)
            if isinstance(job, WorkflowJob) and job.workflow]


def _cycle(start: str, first: str, graph: Mapping[str, set[str]]) -> list[str] | None:
    """A call path first -> ... -> start, if there is one (depth-first, deterministic)."""
    stack: list[tuple[str, list[str]]] = [(first, [first])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        if node == start:
            return path
        if node in seen:
            continue
        seen.add(node)
        for nxt in sorted(graph.get(node, ()), reverse=True):
            stack.append((nxt, [*path, nxt]))
    return None


def call_problems(wf: Workflow, stored: Mapping[str, Workflow]) -> list[dict[str, Any]]:
    """Problems of `wf`'s workflow jobs given the other stored workflows (`wf` replaces its own)."""
    problems: list[dict[str, Any]] = []
    graph = {name: {target for _, _, target in calls(other)}
             for name, other in stored.items() if name != wf.name}
    graph[wf.name] = {target for _, _, target in calls(wf)}
    for i, job, target in calls(wf):
        field = f"jobs[{i}].workflow"
        if target == wf.name:
            continue  # reported by the spec itself
        if target not in stored:
            problems.append({"field": field, "job": job,
                             "message": f"job '{job}': calls unknown workflow '{target}'"})
            continue
        path = _cycle(wf.name, target, graph)
        if path:
            chain = " -> ".join([wf.name, *path])
            problems.append({"field": field, "job": job, "message":
                             f"job '{job}': workflow '{wf.name}' would call itself: {chain}"})
        called = wf.jobs[i]
        assert isinstance(called, WorkflowJob)
        problems.extend(_input_problems(i, job, called.inputs or {}, stored[target]))
    return problems


def _input_problems(i: int, job: str, inputs: Mapping[str, Any],
                    target: Workflow) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in inputs:
        if name not in target.inputs:
            out.append({"field": f"jobs[{i}].inputs.{name}", "job": job,
                        "message": f"job '{job}': workflow '{target.name}' has no input '{name}'"
                        + (f" (inputs: {', '.join(target.inputs)})" if target.inputs else "")})
    for name, spec in target.inputs.items():
        if spec.is_required and name not in inputs:
            out.append({"field": f"jobs[{i}].inputs", "job": job,
                        "message": f"job '{job}': workflow '{target.name}' needs input '{name}'"})
    return out


__all__ = ["call_problems", "calls"]
