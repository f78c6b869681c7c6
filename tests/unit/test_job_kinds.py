"""Validation of http, message and workflow jobs, secret references, cross-workflow calls,
masking, and what the generated flow holds (references, never values)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flowforge.controlplane.compiler import compile_workflow
from flowforge.core.errors import SpecError
from flowforge.core.secretrefs import MASK, Masker, secret_refs
from flowforge.core.validation import load_workflow
from flowforge.core.variables import name_problem, value_problem
from flowforge.core.workflow import spec_json
from flowforge.core.workflow_calls import call_problems


def wf(*jobs: dict[str, Any], name: str = "wf", **extra: Any) -> dict[str, Any]:
    return {"name": name, "jobs": list(jobs), **extra}


def http(name: str = "h", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "http", "url": "http://127.0.0.1:9/x", **extra}


def problems(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    with pytest.raises(SpecError) as info:
        load_workflow(document)
    for p in info.value.problems:
        assert p["message"] and p["field"]
    return {p["field"]: p for p in info.value.problems}


def test_a_full_http_job_is_valid_and_keeps_json_as_json() -> None:
    doc = wf(http(method="post", headers={"Authorization": "Bearer {{ secrets.api-token }}",
                                          "X-Run": "{{ run.id }}"},
                  query={"page": 2, "key": "{{ secrets['query-key'] }}"},
                  json={"rows": "{{ inputs.n }}"},
                  auth={"type": "basic", "username": "me", "password": "{{ secrets.pw }}"},
                  timeout=5, retries=2, retry_delay=0.5, expect_status=[200, "3xx"]),
             inputs={"n": {"type": "integer", "default": 1}})
    # `secrets.api-token` parses as `secrets.api - token`: it must be the bracket form
    found = problems(doc)
    assert "jobs[0].headers.Authorization" in found
    doc["jobs"][0]["headers"]["Authorization"] = "Bearer {{ secrets['api-token'] }}"
    spec = load_workflow(doc)
    stored = json.loads(spec_json(spec))
    assert stored["jobs"][0]["json"] == {"rows": "{{ inputs.n }}"}  # not `json_body`
    assert load_workflow(stored).jobs[0].json_body == {"rows": "{{ inputs.n }}"}


@pytest.mark.parametrize(("job", "field", "text"), [
    (http(url=None), "jobs[0].url", "needs a 'url'"),
    (http(url="ftp://x"), "jobs[0].url", "not an http"),
    (http(method="FETCH"), "jobs[0].method", "unknown HTTP method"),
    (http(json={"a": 1}, body="x"), "jobs[0].json", "not both"),
    (http(auth={"type": "bearer"}), "jobs[0].auth", "takes a 'token'"),
    (http(auth={"type": "basic", "username": "u"}), "jobs[0].auth", "'username' and 'password'"),
    (http(auth={"type": "digest"}), "jobs[0].auth.type", "basic"),
    (http(expect_status=[700]), "jobs[0].expect_status", "not a status code"),
    (http(headers={"X": {"nested": 1}}), "jobs[0].headers.X", "strings or numbers"),
    (http(runtime="bash"), "jobs[0].runtime", "belongs to script jobs"),
    ({"name": "s", "runtime": "bash", "script": "true", "url": "http://x"}, "jobs[0].url",
     "belongs to http jobs"),
    ({"name": "w", "type": "workflow"}, "jobs[0].workflow", "needs 'workflow'"),
    ({"name": "w", "type": "workflow", "workflow": "wf"}, "jobs[0].workflow", "calls itself"),
    ({"name": "m", "type": "message", "to": "not a url", "body": "x"}, "jobs[0].to",
     "neither an apprise URL"),
])
def test_bad_job_kinds_name_job_and_field(job: dict[str, Any], field: str, text: str) -> None:
    found = problems(wf(job))
    assert field in found, found
    assert text in found[field]["message"] and found[field]["job"] == job["name"]


@pytest.mark.parametrize(("job", "field"), [
    ({"name": "s", "runtime": "bash", "script": "true", "params": {"t": "{{ secrets.t }}"}},
     "jobs[0].params.t"),
    ({"name": "m", "type": "message", "to": "json://127.0.0.1:9/x", "body": "{{ secrets.t }}"},
     "jobs[0].body"),
    ({"name": "w", "type": "workflow", "workflow": "other", "inputs": {"x": "{{ secrets.t }}"}},
     "jobs[0].inputs.x"),
    (http(url="http://127.0.0.1:9/{{ secrets.t }}"), "jobs[0].url"),
])
def test_secrets_are_refused_where_they_would_be_published(job: dict[str, Any], field: str) -> None:
    found = problems(wf(job))
    assert "secrets cannot be used" in found[field]["message"]


def test_secrets_in_outputs_and_computed_names_are_refused() -> None:
    found = problems(wf({"name": "s", "runtime": "bash", "script": "true"},
                        outputs={"leak": "{{ secrets.t }}"}))
    assert "secrets cannot be used" in found["outputs.leak"]["message"]
    found = problems(wf({"name": "s", "runtime": "bash", "script": "true",
                         "env": {"T": "{{ secrets[run.id] }}"}}))
    assert "named literally" in found["jobs[0].env.T"]["message"]
    found = problems(wf({"name": "s", "runtime": "bash", "script": "true",
                         "env": {"T": "{{ secrets.Bad_Name }}"}}))
    assert "not a secret name" in found["jobs[0].env.T"]["message"]


def test_secret_refs_and_generated_flow_hold_only_references() -> None:
    assert secret_refs("{{ secrets.a }}-{{ secrets['b-c'] }}") == {"a", "b-c"}
    spec = load_workflow(wf({"name": "s", "runtime": "bash", "script": "echo $T",
                             "env": {"T": "{{ secrets.token }}"}}))
    compiled = compile_workflow(spec)
    assert "{{ secrets.token }}" in compiled.spec_json
    assert "secrets" not in compiled.source  # the module loads the spec; no value, no reference


def test_masker_masks_strings_nested_values_and_lines_of_multiline_secrets() -> None:
    masker = Masker()
    assert masker.mask("nothing yet") == "nothing yet"
    masker.add(["hunter2", "", "-----BEGIN KEY-----\nAAAABBBBCCCCDDDD\n-----END KEY-----"])
    assert masker.mask("pw=hunter2!") == f"pw={MASK}!"
    assert masker.mask({"a": ["x hunter2", 3, None], "hunter2": True}) == {
        "a": [f"x {MASK}", 3, None], MASK: True}
    assert masker.mask("line: AAAABBBBCCCCDDDD") == f"line: {MASK}"


def test_variable_names_and_sizes() -> None:
    assert name_problem("cursor_1-a") is None
    assert name_problem("Cursor") and name_problem("a/b") and name_problem("")
    assert value_problem({"page": 7}) is None
    assert "at most 5000" in (value_problem("x" * 6000) or "")


def other(name: str, *calls: str, inputs: dict[str, Any] | None = None) -> Any:
    jobs = [{"name": f"call_{c}", "type": "workflow", "workflow": c} for c in calls] or [
        {"name": "s", "runtime": "bash", "script": "true"}]
    return load_workflow(wf(*jobs, name=name, inputs=inputs or {}))


def test_call_cycles_through_other_workflows_are_found() -> None:
    stored = {"b": other("b", "c"), "c": other("c", "a"), "d": other("d")}
    a = other("a", "d", "b")
    found = call_problems(a, stored)
    assert [(p["job"], p["field"]) for p in found] == [("call_b", "jobs[1].workflow")]
    assert "a -> b -> c -> a" in found[0]["message"]
    assert call_problems(other("a", "d"), stored) == []


def test_calls_to_unknown_workflows_and_inputs_are_found() -> None:
    stored = {"t": other("t", inputs={"need": {"type": "string"},
                                      "opt": {"type": "integer", "default": 1}})}
    caller = load_workflow(wf({"name": "j", "type": "workflow", "workflow": "t",
                               "inputs": {"typo": 1}},
                              {"name": "k", "type": "workflow", "workflow": "nope"}, name="caller"))
    found = {(p["field"], p["message"].split(": ", 1)[1]) for p in call_problems(caller, stored)}
    assert ("jobs[0].inputs.typo", "workflow 't' has no input 'typo' (inputs: need, opt)") in found
    assert ("jobs[0].inputs", "workflow 't' needs input 'need'") in found
    assert ("jobs[1].workflow", "calls unknown workflow 'nope'") in found
