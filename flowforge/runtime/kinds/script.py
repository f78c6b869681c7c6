"""Script jobs: templates resolved to plain data, handed to the target's executor.

The job's values reach the script only as data (environment variables and `input.json`),
never as shell text. Which executor runs it is the target's kind (`job.target_kind`), looked up
in the run's executors; the executor reports how it ended, and this module turns that into the
job's output, condition, progress and variable writes.
"""

from __future__ import annotations

from typing import Any

from flowforge.core import templates
from flowforge.core.errors import JobError
from flowforge.core.jobs import ScriptJob
from flowforge.runtime import variables
from flowforge.runtime.executors.base import ScriptRequest
from flowforge.runtime.kinds.base import JobContext, KindResult


def _uses_variables(script: str) -> bool:
    # Reading every Prefect variable costs an API call; only scripts that read them pay it.
    return any(word in script for word in ("get_variable", "getVariable"))


def run(ctx: JobContext) -> KindResult:
    job = ctx.job
    assert isinstance(job, ScriptJob) and job.runtime is not None and job.script is not None
    scope = ctx.scope
    try:
        env = {k: templates.to_env_value(v)
               for k, v in templates.render(job.env, ctx.context).items()}
        params = templates.render(job.params, ctx.context)
    except templates.TemplateError as exc:
        raise JobError(f"job '{job.name}': {exc}") from exc
    # A for-each item's shared part of input.json comes encoded once for all its items.
    shared: dict[str, Any] = (scope.mappings[job.name].shared_input if ctx.in_item
                              else scope.ledger.shared_input(ctx.upstream))
    request = ScriptRequest(
        name=job.name, runtime=job.runtime, script=job.script, env=env,
        input={"inputs": shared["inputs"], "params": params, "jobs": shared["jobs"],
               "item": ctx.item, "trigger": shared["trigger"]},
        event={"workflow": scope.spec.name, "job": job.name, "run_id": scope.flow_run_id,
               "trigger": scope.trigger, "attempt": ctx.attempt, "item": ctx.item},
        variables=variables.read_all(scope.spec.ns) if _uses_variables(job.script) else {},
        timeout=job.timeout, work_root=scope.settings.job_root,
    )
    executor = scope.executors.get(job.target_kind)
    result = executor.run(request, ctx.log, job.target_options)
    if result.progress:
        scope.ledger.update(job.name, progress=result.progress)
    if result.variables_set:
        variables.write(result.variables_set, scope.spec.ns)
    if result.error is not None:
        if result.output_on_error:  # e.g. which servers failed, and how
            scope.ledger.update(job.name, output=result.output)
        raise JobError(result.error)
    return result.output, result.condition


__all__ = ["run"]
