"""Control flow without a server: validation (422s naming job and field), compile output,
condition evaluation, for-each item lists, retry options, repair plans, run limits."""

from __future__ import annotations

from typing import Any

import pytest

from flowforge.controlplane import limits as limit_sync
from flowforge.controlplane.compiler import compile_workflow
from flowforge.core import repair
from flowforge.core.errors import InvalidRequestError, JobError, SpecError
from flowforge.core.jobs import ConditionJob
from flowforge.core.validation import load_workflow
from flowforge.core.wire import RunSummary
from flowforge.runtime import foreach
from flowforge.runtime.kinds import condition
from flowforge.runtime.tasks import job_tasks
from flowforge.runtime.tasks import prefect_retry_options as _retry_options


def job(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "script", "runtime": "bash", "script": "true", **extra}


def cond(name: str, expr: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "condition", "if": expr, **extra}


def doc(*jobs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "wf", "jobs": list(jobs), **extra}


def problems(document: Any) -> list[dict[str, Any]]:
    with pytest.raises(SpecError) as info:
        load_workflow(document)
    return info.value.problems


def only(document: Any) -> dict[str, Any]:
    found = problems(document)
    assert len(found) == 1, found
    return found[0]


# --- validation ---------------------------------------------------------------------------------

def test_branching_document_is_valid() -> None:
    wf = load_workflow(doc(
        job("validate"),
        cond("ok", "{{ jobs.validate.output.valid and inputs.level > 2 }}", needs=["validate"]),
        job("process", needs=[{"job": "ok", "on": True}]),
        job("alert", needs=[{"job": "ok", "on": False}]),
        inputs={"level": {"type": "integer", "default": 3}}))
    assert wf.job("ok").if_expr is not None
    assert [n.on for n in wf.job("alert").needs] == ["false"]


@pytest.mark.parametrize(("extra", "field", "words"), [
    ({}, "jobs[0].if", "needs 'if'"),
    ({"if": "jobs.a.output"}, "jobs[0].if", "single"),
    ({"if": "{{ a }} and {{ b }}"}, "jobs[0].if", "single"),
    ({"if": "{{ jobs.a.output ==  }}"}, "jobs[0].if", "does not parse"),
    ({"if": "{{ os.system('x') }}"}, "jobs[0].if", "unknown variable 'os'"),
    ({"if": "{{ secrets.token }}"}, "jobs[0].if", "secrets cannot be used"),
    ({"if": "{{ true }}", "for_each": [1]}, "jobs[0].for_each", "does not apply"),
])
def test_condition_job_problems_name_job_and_field(extra: dict[str, Any], field: str,
                                                   words: str) -> None:
    p = only(doc({"name": "c", "type": "condition", **extra}))
    assert (p["job"], p["field"]) == ("c", field) and words in p["message"], p
    assert p["message"].startswith("job 'c': ")


def test_condition_fields_only_on_condition_jobs() -> None:
    p = only(doc(job("a", **{"if": "{{ true }}"})))
    assert (p["job"], p["field"]) == ("a", "jobs[0].if")


def test_condition_job_refuses_script_fields() -> None:
    found = problems(doc(cond("c", "{{ true }}", runtime="bash", script="echo")))
    assert {p["field"] for p in found} == {"jobs[0].runtime", "jobs[0].script"}


@pytest.mark.parametrize(("extra", "field", "words"), [
    ({"for_each": 5}, "jobs[0].for_each", "list"),
    ({"for_each": "a,b"}, "jobs[0].for_each", "single"),
    ({"for_each": "{{ ghost.x }}"}, "jobs[0].for_each", "unknown variable 'ghost'"),
    ({"for_each": [1], "max_parallel": 0}, "jobs[0].max_parallel", "greater than"),
    ({"max_parallel": 3}, "jobs[0].max_parallel", "only to a for_each job"),
    ({"allow_partial": True}, "jobs[0].allow_partial", "only to a for_each job"),
    ({"for_each": [1], "until": "{{ output }}"}, "jobs[0].until", "cannot be combined"),
    ({"env": {"X": "{{ item }}"}}, "jobs[0].env.X", "no for_each"),
])
def test_for_each_problems_name_job_and_field(extra: dict[str, Any], field: str,
                                              words: str) -> None:
    p = only(doc(job("fe", **extra)))
    assert (p["job"], p["field"]) == ("fe", field) and words in p["message"], p


def test_for_each_accepts_literal_lists_inputs_and_upstream_outputs() -> None:
    wf = load_workflow(doc(
        job("list"),
        job("a", for_each=[1, 2], env={"X": "{{ item }}"}),
        job("b", for_each="{{ inputs.files }}", max_parallel=2, allow_partial=True),
        job("c", needs=["list"], for_each="{{ jobs.list.output.files }}"),
        inputs={"files": {"type": "json", "default": ["x"]}}))
    assert wf.job("b").max_parallel == 2


def test_for_each_may_use_jinja_globals_such_as_range() -> None:
    wf = load_workflow(doc(job("a", for_each="{{ range(inputs.n) | list }}"),
                           inputs={"n": {"type": "integer", "default": 3}}))
    assert foreach.resolve_items(wf.job("a"), {"inputs": {"n": 3}}) == [0, 1, 2]


def test_for_each_reading_a_non_ancestor_names_it() -> None:
    p = only(doc(job("list"), job("c", for_each="{{ jobs.list.output }}"),
                 settings={"execution": "dag"}))
    assert p["field"] == "jobs[1].for_each" and "does not depend on 'list'" in p["message"]


@pytest.mark.parametrize(("extra", "field", "words"), [
    ({"until": "done"}, "jobs[0].until", "single"),
    ({"until": "{{ output.status == }}"}, "jobs[0].until", "does not parse"),
    ({"until": "{{ result.ok }}"}, "jobs[0].until", "unknown variable 'result'"),
    ({"interval": 2}, "jobs[0].interval", "only to a job with 'until'"),
    ({"max_attempts": 2}, "jobs[0].max_attempts", "only to a job with 'until'"),
    ({"until": "{{ output }}", "max_attempts": 0}, "jobs[0].max_attempts", "greater than"),
    ({"backoff": "exponential"}, "jobs[0].backoff", "set 'retries'"),
    ({"retries": 2, "jitter": -1}, "jobs[0].jitter", "greater than"),
    ({"retries": 2, "backoff": "linear"}, "jobs[0].backoff", "'constant' or 'exponential'"),
    ({"concurrency": ["GPU!"]}, "jobs[0].concurrency[0]", "not a concurrency limit name"),
    ({"concurrency": ["gpu", "gpu"]}, "jobs[0].concurrency", "more than once"),
])
def test_loop_and_retry_problems_name_job_and_field(extra: dict[str, Any], field: str,
                                                    words: str) -> None:
    p = only(doc(job("j", **extra)))
    assert (p["job"], p["field"]) == ("j", field) and words in p["message"], p


def test_until_reads_output_and_attempt() -> None:
    wf = load_workflow(doc(job("poll", until="{{ output.status == 'done' or attempt > 3 }}",
                               interval=0.5, max_attempts=20)))
    assert wf.job("poll").max_attempts == 20


@pytest.mark.parametrize(("settings", "field"), [
    ({"max_concurrent_runs": 0}, "settings.max_concurrent_runs"),
    ({"max_concurrent_runs": 1, "on_limit": "drop"}, "settings.on_limit"),
])
def test_run_limit_problems(settings: dict[str, Any], field: str) -> None:
    assert only(doc(job("a"), settings=settings))["field"] == field


def test_documents_without_control_flow_keep_their_hash() -> None:
    """New fields default to None, so specs stored before they existed keep their spec hash."""
    compiled = compile_workflow(load_workflow(doc(job("a"))))
    assert "for_each" not in compiled.spec_json and "concurrency" not in compiled.spec_json


# --- compile ------------------------------------------------------------------------------------

def test_compiled_flow_takes_the_repair_parameter() -> None:
    source = compile_workflow(load_workflow(doc(job("a", for_each=[1, 2])))).source
    assert "    flowforge_repair: dict[str, Any] | None = None," in source
    assert "WorkflowRun.start(SPEC, {}, flowforge_trigger, flowforge_repair)" in source


def test_for_each_job_task_does_not_retry_its_items_do() -> None:
    wf = load_workflow(doc(job("a", for_each=[1, 2], retries=3),
                           job("b", retries=2, retry_delay=1, backoff="exponential", jitter=0.5)))
    tasks = job_tasks(wf)
    assert tasks["a"].retries == 0
    assert _retry_options(wf.job("a"))["retries"] == 3
    assert tasks["b"].retries == 2 and tasks["b"].retry_delay_seconds == [1.0, 2.0]
    assert tasks["b"].retry_jitter_factor == 0.5


# --- runtime pieces -----------------------------------------------------------------------------

def _cond_job(expr: str) -> ConditionJob:
    return ConditionJob.model_validate(cond("c", expr))  # the sandbox, not the graph check


def test_condition_evaluates_in_the_sandbox() -> None:
    ctx = {"inputs": {"n": 3}, "jobs": {}}
    assert condition.evaluate(_cond_job("{{ inputs.n > 2 }}"), ctx) == ({"result": True}, True)
    assert condition.evaluate(_cond_job("{{ inputs.n > 5 }}"), ctx) == ({"result": False}, False)
    assert condition.evaluate(_cond_job("{{ jobs.gone.output.x }}"), ctx)[1] is False


def test_condition_runtime_errors_fail_the_job_with_the_message() -> None:
    with pytest.raises(JobError, match=r"job 'c': if: template failed"):
        condition.evaluate(_cond_job("{{ inputs.s | fromjson }}"), {"inputs": {"s": "{"}})
    with pytest.raises(JobError, match="unsafe"):
        condition.evaluate(_cond_job("{{ inputs.s.__class__ }}"), {"inputs": {"s": "x"}})


def test_for_each_items_resolve_to_a_list() -> None:
    wf = load_workflow(doc(job("l"), job("a", needs=["l"], for_each="{{ jobs.l.output }}")))
    a = wf.job("a")
    assert foreach.resolve_items(a, {"jobs": {"l": {"output": [1, 2]}}}) == [1, 2]
    assert foreach.resolve_items(a, {"jobs": {"l": {"output": None}}}) == []
    with pytest.raises(JobError, match="for_each must give a list, got dict"):
        foreach.resolve_items(a, {"jobs": {"l": {"output": {"x": 1}}}})
    assert foreach.current_item() is None and not foreach.in_item()


# --- repair plans -------------------------------------------------------------------------------

def _summary(**states: str) -> RunSummary:
    return RunSummary.model_validate({
        "workflow": "wf", "flow_run_id": "r", "progress": {"done": 0, "total": len(states)},
        "jobs": [{"name": n, "state": s, "output": {"n": n}, "condition": None}
                 for n, s in states.items()]})


def test_repair_reruns_failed_and_not_run_jobs_and_their_dependants() -> None:
    wf = load_workflow(doc(job("a"), job("b"), job("c", needs=["a"]), job("d", needs=["c", "b"]),
                           job("e", needs=["b"])))
    rerun, reused = repair.plan(wf, _summary(a="COMPLETED", b="COMPLETED", c="FAILED",
                                             d="UPSTREAM_FAILED", e="COMPLETED"))
    assert rerun == ["c", "d"]
    assert sorted(reused) == ["a", "b", "e"] and reused["a"]["output"] == {"n": "a"}


def test_repair_can_add_completed_jobs_and_refuses_unknown_ones() -> None:
    wf = load_workflow(doc(job("a"), job("b", needs=["a"])))
    rerun, reused = repair.plan(wf, _summary(a="COMPLETED", b="COMPLETED"), ["a"])
    assert rerun == ["a", "b"] and reused == {}
    with pytest.raises(InvalidRequestError, match="ghost"):
        repair.plan(wf, _summary(a="COMPLETED", b="COMPLETED"), ["ghost"])


def test_repair_reruns_jobs_whose_output_was_truncated() -> None:
    wf = load_workflow(doc(job("a"), job("b")))
    summary = _summary(a="COMPLETED", b="FAILED")
    summary.jobs[0].output = {"truncated": True, "bytes": 10**6}
    assert repair.plan(wf, summary) == (["a", "b"], {})


def test_run_limit_maps_to_deployment_concurrency() -> None:
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    assert limit_sync.deployment_limit(load_workflow(doc(job("a")))) == {
        "concurrency_limit": None, "concurrency_options": None}
    fields = limit_sync.deployment_limit(load_workflow(doc(
        job("a", concurrency=["gpu"]), job("b", concurrency=["gpu", "db"]),
        settings={"max_concurrent_runs": 2, "on_limit": "cancel_new"})))
    assert fields["concurrency_limit"] == 2
    assert fields["concurrency_options"].collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
    wf = load_workflow(doc(job("a", concurrency=["gpu"]), job("b", concurrency=["gpu", "db"])))
    assert limit_sync.job_limit_names(wf) == ["db", "gpu"]
