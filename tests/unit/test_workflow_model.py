"""The workflow model: parsing, whole-document validation, graph helpers and run inputs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from api.errors import status_of
from flowforge.core.document import parse_document
from flowforge.core.errors import InputError, SpecError
from flowforge.core.inputs import resolve_inputs
from flowforge.core.validation import load_workflow
from flowforge.core.workflow import Workflow, effective_needs, topological_order

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def job(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "script", "runtime": "bash", "script": "true", **extra}


def doc(*jobs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "wf", "jobs": list(jobs), **extra}


def problems(document: Any) -> list[dict[str, Any]]:
    with pytest.raises(SpecError) as info:
        load_workflow(document)
    err = info.value
    assert err.problems, "a SpecError always lists its problems"
    assert err.details == err.problems
    assert status_of(err) == 422 and err.code == "invalid_workflow"
    for p in err.problems:
        assert isinstance(p["field"], str) and p["message"]
    return err.problems


def only(document: Any) -> dict[str, Any]:
    found = problems(document)
    assert len(found) == 1, found
    return found[0]


# --- the seed examples ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["document-analysis", "etl", "financial-report"])
def test_examples_load(name: str) -> None:
    wf = load_workflow((EXAMPLES / f"{name}.yaml").read_text())
    assert isinstance(wf, Workflow)
    assert topological_order(wf)[0] == wf.jobs[0].name


def test_financial_report_branches_on_success_and_failure() -> None:
    wf = load_workflow((EXAMPLES / "financial-report.yaml").read_text())
    assert [(n.job, n.on) for n in wf.job("generate_report").needs] == [("join_financials", "success")]
    assert [(n.job, n.on) for n in wf.job("send_alert").needs] == [("join_financials", "failure")]
    assert [t.type for t in wf.triggers] == ["dependency", "webhook"]


def test_etl_is_a_dag_with_a_schedule() -> None:
    wf = load_workflow((EXAMPLES / "etl.yaml").read_text())
    assert not wf.is_sequential
    assert effective_needs(wf)["extract_orders"] == []
    assert [n.job for n in effective_needs(wf)["join_transform"]] == [
        "extract_customers", "extract_orders", "extract_products"]
    assert wf.triggers[0].type == "schedule"
    assert (wf.triggers[0].cron, wf.triggers[0].timezone) == ("0 2 * * *", "America/New_York")


def test_file_fanout_loads_since_issue_7() -> None:
    wf = load_workflow((EXAMPLES / "file-fanout.yaml").read_text())
    fanout = wf.job("process_file")
    assert fanout.for_each == "{{ jobs.list_files.output.files }}" and fanout.max_parallel == 3


def test_server_health_is_valid_since_ssh_targets() -> None:
    wf = load_workflow((EXAMPLES / "server-health.yaml").read_text())
    target = wf.job("disk_check").target
    assert target is not None and target.ssh is not None
    assert target.ssh.servers == ["web1", "web2"] and not target.ssh.allow_partial


@pytest.mark.parametrize(("target", "field", "needle"), [
    ({"ssh": {}}, "jobs[0].target.ssh", "needs 'servers' or 'tags'"),
    ({"ssh": {"servers": ["Web_1"]}}, "jobs[0].target.ssh", "'Web_1' is not a valid name"),
    ({"ssh": {"servers": ["a", "a"]}}, "jobs[0].target.ssh", "more than once"),
    ({"ssh": {"servers": ["a"], "user": "x"}}, "jobs[0].target.ssh.user", "Extra inputs"),
    ({"ssh": {"tags": ["web"]}, "local": {}}, "jobs[0].target", "one of local, container or ssh"),
    ({"container": {"image": "x"}, "ssh": {"servers": ["a"]}}, "jobs[0].target",
     "not container and ssh"),
])
def test_ssh_target_problems_name_the_job_and_field(target: dict[str, Any], field: str,
                                                     needle: str) -> None:
    found = problems({"name": "t", "jobs": [{"name": "j", "runtime": "bash", "script": "true",
                                               "target": target}]})
    assert [(p["field"], p["job"]) for p in found] == [(field, "j")], found
    assert needle in found[0]["message"]


def test_ssh_target_only_for_scripts() -> None:
    found = problems({"name": "t", "jobs": [{"name": "h", "type": "http", "url": "http://x",
                                               "target": {"ssh": {"servers": ["a"]}}}]})
    assert [(p["field"], p["job"]) for p in found] == [("jobs[0].target.ssh", "h")]


# --- parsing: YAML 1.2 booleans, `on:` keys, JSON ----------------------------------------------------

def test_yaml_on_key_and_on_true_edge() -> None:
    wf = load_workflow("""
name: branchy
jobs:
  - {name: check, runtime: bash, script: "true"}
  - name: page
    runtime: bash
    script: "true"
    needs:
      - job: check
        on: true
  - name: relax
    runtime: bash
    script: "true"
    needs: [{job: check, on: false}]
  - name: alert
    runtime: bash
    script: "true"
    needs:
      - job: check
        on: failure
""")
    assert [(n.job, n.on) for n in wf.job("page").needs] == [("check", "true")]
    assert [(n.job, n.on) for n in wf.job("relax").needs] == [("check", "false")]
    assert [(n.job, n.on) for n in wf.job("alert").needs] == [("check", "failure")]


def test_yaml_1_2_scalars() -> None:
    data = parse_document("a: yes\nb: no\nc: on\nd: off\ne: true\nf: False\ng: 10:30\nh: 017\n"
                          "i: 0x1F\nj: 0o17\nk: 1_000\nl: 2024-01-01\nm: 1.5\nn: -3\no: .inf\np: 1e3\n"
                          "q: ~\nr: null\n")
    assert data == {"a": "yes", "b": "no", "c": "on", "d": "off", "e": True, "f": False,
                    "g": "10:30", "h": 17, "i": 31, "j": 15, "k": "1_000", "l": "2024-01-01",
                    "m": 1.5, "n": -3, "o": float("inf"), "p": 1000.0, "q": None, "r": None}
    assert type(data["n"]) is int


def test_yaml_date_default_is_a_string_not_a_crash() -> None:
    wf = load_workflow("name: d\ninputs: {day: {type: string, default: 2024-01-01}}\n"
                       "jobs: [{name: a, runtime: bash, script: x}]\n")
    assert wf.inputs["day"].default == "2024-01-01"


def test_already_parsed_yaml_1_1_on_key_is_fixed() -> None:
    # a YAML 1.1 loader (e.g. plain yaml.safe_load) turns a bare `on:` key into True
    wf = load_workflow(doc(job("a"), job("b", needs=[{"job": "a", True: "failure"}])))
    assert wf.job("b").needs[0].on == "failure"


def test_json_document() -> None:
    text = json.dumps(doc(job("a"), job("b", needs=[{"job": "a", "on": "completion"}]),
                          inputs={"n": {"type": "integer", "default": 3}}))
    wf = load_workflow(text)
    assert wf.job("b").needs[0].on == "completion"
    assert wf.inputs["n"].default == 3
    assert load_workflow(text.encode()).name == "wf"


def test_json_on_true_boolean() -> None:
    wf = load_workflow(json.dumps(doc(job("a"), job("b", needs=[{"job": "a", "on": True}]))))
    assert wf.job("b").needs[0].on == "true"


def test_plain_string_needs() -> None:
    wf = load_workflow(doc(job("a"), job("b", needs="a")))
    assert [(n.job, n.on) for n in wf.job("b").needs] == [("a", "success")]


@pytest.mark.parametrize("text", ["name: [unclosed", "{not json", "a: b: c"])
def test_unparseable_document(text: str) -> None:
    p = only(text)
    assert p["field"] == "" and p["message"].startswith("not valid JSON or YAML")


@pytest.mark.parametrize("text", ["[1, 2]", "just a string", ""])
def test_document_must_be_a_mapping(text: str) -> None:
    assert only(text)["message"] == "a workflow document must be a mapping"


# --- validation errors ---------------------------------------------------------------------------

def test_cycle_names_the_jobs_on_it() -> None:
    p = only(doc(job("a", needs=["b"]), job("b", needs=["a"])))
    assert p["field"] == "jobs"
    assert p["message"] == "dependency cycle: a -> b -> a"


def test_longer_cycle_with_a_tail() -> None:
    p = only(doc(job("start"), job("x", needs=["start", "z"]), job("y", needs=["x"]), job("z", needs=["y"])))
    assert p["message"].startswith("dependency cycle: ")
    cycle = p["message"].removeprefix("dependency cycle: ").split(" -> ")
    assert cycle[0] == cycle[-1] and set(cycle) == {"x", "y", "z"}
    assert p["job"] in {"x", "y", "z"}


def test_self_need() -> None:
    p = only(doc(job("a", needs=["a"])))
    assert (p["job"], p["field"]) == ("a", "jobs[0].needs[0].job")
    assert "cannot need itself" in p["message"]


def test_unknown_need() -> None:
    p = only(doc(job("a"), job("b", needs=["a", "ghost"])))
    assert (p["job"], p["field"]) == ("b", "jobs[1].needs[1].job")
    assert p["message"] == "job 'b': needs unknown job 'ghost'"


def test_need_listed_twice() -> None:
    p = only(doc(job("a"), job("b", needs=["a", {"job": "a", "on": "failure"}])))
    assert (p["job"], p["field"]) == ("b", "jobs[1].needs")
    assert "'a' more than once" in p["message"]


def test_duplicate_job_names() -> None:
    p = only(doc(job("a"), job("a")))
    assert (p["job"], p["field"]) == ("a", "jobs[1].name")
    assert p["message"] == "duplicate job name 'a'"


@pytest.mark.parametrize("name", ["9lives", "has space", "dot.ted", ""])
def test_bad_job_name(name: str) -> None:
    p = only(doc(job(name)))
    assert p["field"] == "jobs[0].name" and f"job name '{name}'" in p["message"]


def test_no_jobs() -> None:
    assert only(doc())["field"] == "jobs"


def test_missing_jobs_field() -> None:
    p = only({"name": "wf"})
    assert p["field"] == "jobs" and "required" in p["message"].lower()


def test_template_that_does_not_parse() -> None:
    p = only(doc(job("a", env={"X": "{{ inputs.n"})))
    assert (p["job"], p["field"]) == ("a", "jobs[0].env.X")
    assert "template does not parse" in p["message"] and p["message"].startswith("job 'a': env.X")


def test_template_naming_an_unknown_job() -> None:
    p = only(doc(job("a", params={"rows": "{{ jobs.ghost.output.rows }}"})))
    assert (p["job"], p["field"]) == ("a", "jobs[0].params.rows")
    assert p["message"] == "job 'a': template names unknown job 'ghost'"


def test_template_reading_a_job_that_is_not_an_ancestor() -> None:
    found = problems(doc(job("a"), job("b", needs=["a"]), job("c", needs=["a"],
                                                           env={"X": "{{ jobs.b.output }}"})))
    assert len(found) == 1
    p = found[0]
    assert (p["job"], p["field"]) == ("c", "jobs[2].env.X")
    assert "reads jobs.b" in p["message"] and "does not depend on 'b'" in p["message"]


def test_template_may_read_any_ancestor() -> None:
    wf = load_workflow(doc(job("a"), job("b", needs=["a"]),
                           job("c", needs=["b"], env={"X": "{{ jobs.a.output }}", "Y": "{{ jobs['b'].state }}"})))
    assert wf.job("c").env["X"] == "{{ jobs.a.output }}"


def test_template_unknown_input() -> None:
    p = only(doc(job("a", env={"N": "{{ inputs.nope }}", "M": "{{ inputs.known }}"}),
                 inputs={"known": {"type": "string", "default": "x"}}))
    assert (p["job"], p["field"]) == ("a", "jobs[0].env.N")
    assert p["message"] == "job 'a': template names unknown input 'nope'"


def test_template_unknown_variable() -> None:
    p = only(doc(job("a", env={"N": "{{ vault.token }}"})))
    assert "unknown variable 'vault'" in p["message"]


def test_output_templates_are_checked_too() -> None:
    p = only(doc(job("a"), outputs={"total": "{{ jobs.zz.output }}"}))
    assert p["field"] == "outputs.total" and "job" not in p
    assert p["message"] == "template names unknown job 'zz'"


def test_message_job_templates_are_checked() -> None:
    p = only(doc(job("a"), {"name": "m", "type": "message", "needs": [{"job": "a", "on": "failure"}],
                            "to": "json://127.0.0.1:9/x", "body": "{{ jobs.b.error }}"}))
    assert (p["job"], p["field"]) == ("m", "jobs[1].body")


def test_bad_run_if() -> None:
    p = only(doc(job("a"), job("b", needs=["a"], run_if="sometimes")))
    assert (p["job"], p["field"]) == ("b", "jobs[1].run_if")
    assert "unknown run_if 'sometimes'" in p["message"] and "all_success" in p["message"]


def test_run_if_is_case_insensitive() -> None:
    wf = load_workflow(doc(job("a"), job("b", needs=["a"], run_if=" All_Done ")))
    assert wf.job("b").run_if == "all_done"


def test_rule_run_if_with_on_edges() -> None:
    p = only(doc(job("a"), job("b", needs=[{"job": "a", "on": "failure"}], run_if="one_failed")))
    assert (p["job"], p["field"]) == ("b", "jobs[1].run_if")
    assert "'one_failed'" in p["message"] and "on:" in p["message"]


def test_rule_run_if_with_plain_needs_and_edge_modes_with_on() -> None:
    load_workflow(doc(job("a"), job("b", needs=["a"], run_if="at_least_one_failed")))
    load_workflow(doc(job("a"), job("b", needs=[{"job": "a", "on": "failure"}], run_if="any")))


def test_bad_edge_on() -> None:
    p = only(doc(job("a"), job("b", needs=[{"job": "a", "on": "yes"}])))
    assert (p["job"], p["field"]) == ("b", "jobs[1].needs[0].on")


def test_missing_runtime_and_script() -> None:
    found = problems(doc({"name": "a", "type": "script"}))
    assert {(p["job"], p["field"]) for p in found} == {("a", "jobs[0].runtime"), ("a", "jobs[0].script")}
    assert any("needs 'runtime'" in p["message"] for p in found)


def test_bad_runtime() -> None:
    p = only(doc(job("a", runtime="ruby")))
    assert (p["job"], p["field"]) == ("a", "jobs[0].runtime")
    assert p["message"].startswith("job 'a': runtime:")


def test_message_job_needs_to_and_body() -> None:
    found = problems(doc({"name": "m", "type": "message"}))
    assert {p["field"] for p in found} == {"jobs[0].to", "jobs[0].body"}


def test_unknown_job_field() -> None:
    p = only(doc(job("a", colour="blue")))
    assert (p["job"], p["field"]) == ("a", "jobs[0].colour")


@pytest.mark.parametrize("name", ["Bad Name", "UPPER", "-leading", "a" * 64, "sl/ash"])
def test_bad_workflow_name(name: str) -> None:
    p = only({**doc(job("a")), "name": name})
    assert p["field"] == "name" and "lowercase slug" in p["message"]


@pytest.mark.parametrize("key", ["1X", "A-B", "has space", ""])
def test_bad_env_name(key: str) -> None:
    p = only(doc(job("a", env={key: "v"})))
    assert (p["job"], p["field"]) == ("a", f"jobs[0].env.{key}")
    assert "not a valid variable name" in p["message"]


@pytest.mark.parametrize("key", ["FLOWFORGE_RUN", "PREFECT_API_URL"])
def test_reserved_env_name(key: str) -> None:
    p = only(doc(job("a", env={key: "v"})))
    assert (p["job"], p["field"]) == ("a", f"jobs[0].env.{key}")
    assert "reserved" in p["message"]


@pytest.mark.parametrize("name", ["class", "1x", "flowforge_trigger", "with-dash"])
def test_bad_input_name(name: str) -> None:
    p = only(doc(job("a"), inputs={name: {"type": "string", "default": "x"}}))
    assert p["field"] == f"inputs.{name}"


@pytest.mark.parametrize(("spec", "words"), [
    ({"type": "integer", "default": "5"}, "must be of type integer"),
    ({"type": "boolean", "default": 1}, "must be of type boolean"),
    ({"type": "integer", "default": True}, "must be of type integer"),
    ({"type": "enum"}, "non-empty 'enum'"),
    ({"type": "string", "enum": ["a", "b"], "default": "c"}, "must be one of"),
    ({"type": "text"}, "type"),
])
def test_bad_input_spec(spec: dict[str, Any], words: str) -> None:
    p = only(doc(job("a"), inputs={"x": spec}))
    assert p["field"].startswith("inputs.x") and words in p["message"]


def test_invalid_cron_says_why() -> None:
    p = only(doc(job("a"), triggers=[{"type": "schedule", "cron": "61 * * * *"}]))
    assert p["field"] == "triggers[0].cron"
    assert "invalid cron expression '61 * * * *'" in p["message"] and "out of range" in p["message"]


def test_cron_with_wrong_field_count_says_why() -> None:
    p = only(doc(job("a"), triggers=[{"type": "schedule", "cron": "every day"}]))
    assert p["field"] == "triggers[0].cron" and "columns" in p["message"]


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../../etc/passwd"])
def test_unknown_timezone_says_why(tz: str) -> None:
    p = only(doc(job("a"), triggers=[{"type": "schedule", "cron": "0 2 * * *", "timezone": tz}]))
    assert p["field"] == "triggers[0].timezone"
    assert f"unknown timezone '{tz}'" in p["message"] and "IANA" in p["message"]


def test_schedule_missing_cron() -> None:
    p = only(doc(job("a"), triggers=[{"type": "schedule"}]))
    assert p["field"] == "triggers[0].cron"


def test_unknown_trigger_type() -> None:
    p = only(doc(job("a"), triggers=[{"type": "carrier-pigeon"}]))
    assert p["field"] == "triggers[0]" and "carrier-pigeon" in p["message"]


def test_valid_triggers() -> None:
    wf = load_workflow(doc(job("a"), triggers=[
        {"type": "schedule", "cron": "*/15 * * * *", "timezone": "Europe/Berlin", "enabled": False},
        {"type": "dependency", "upstream": ["etl"], "on": "failure", "logic": "all"},
        {"type": "webhook"},
        {"type": "event", "event": "file.arrived", "match": {"bucket": "x"}},
    ]))
    assert [t.type for t in wf.triggers] == ["schedule", "dependency", "webhook", "event"]


def test_dependency_trigger_needs_an_upstream() -> None:
    p = only(doc(job("a"), triggers=[{"type": "dependency", "upstream": []}]))
    assert p["field"] == "triggers[0].upstream"


def test_many_graph_problems_reported_at_once() -> None:
    document = {
        "name": "Bad Name",
        "inputs": {"class": {"type": "string", "default": "x"}},
        "jobs": [
            job("a", env={"1X": "y", "FLOWFORGE_X": "z"}),
            {"name": "a", "type": "script"},
            job("c", needs=["ghost"], run_if="sometimes"),
            {"name": "d", "type": "condition"},
        ],
    }
    found = problems(document)
    assert [(p.get("job"), p["field"]) for p in found] == [
        (None, "name"),
        (None, "inputs.class"),
        ("a", "jobs[0].env.1X"),
        ("a", "jobs[0].env.FLOWFORGE_X"),
        ("a", "jobs[1].name"),
        ("a", "jobs[1].runtime"),
        ("a", "jobs[1].script"),
        ("c", "jobs[2].needs[0].job"),
        ("c", "jobs[2].run_if"),
        ("d", "jobs[3].if"),
    ]
    with pytest.raises(SpecError, match=r"^workflow name 'Bad Name' .* \(and 9 more\)$"):
        load_workflow(document)


def test_many_shape_problems_reported_at_once() -> None:
    found = problems(doc(job("a", retries=-1, runtime="ruby"), job("b", timeout=0),
                         settings={"max_parallel_jobs": 0},
                         triggers=[{"type": "schedule", "cron": "bad"},
                                   {"type": "schedule", "cron": "* * * * *", "timezone": "Nowhere"}]))
    assert {(p.get("job"), p["field"]) for p in found} == {
        ("a", "jobs[0].retries"), ("a", "jobs[0].runtime"), ("b", "jobs[1].timeout"),
        (None, "settings.max_parallel_jobs"), (None, "triggers[0].cron"), (None, "triggers[1].timezone")}


def test_several_template_problems_reported_at_once() -> None:
    found = problems(doc(job("a", env={"X": "{{ jobs.ghost.output }}", "Y": "{{ inputs.nope }}"}),
                         job("b", env={"Z": "{{ jobs.a.output"})))
    assert [(p["job"], p["field"]) for p in found] == [
        ("a", "jobs[0].env.X"), ("a", "jobs[0].env.Y"), ("b", "jobs[1].env.Z")]


# --- sequential fallback and order ----------------------------------------------------------------

def test_sequential_fallback_chains_jobs_in_list_order() -> None:
    wf = load_workflow(doc(job("c"), job("a"), job("b")))
    assert wf.is_sequential
    needs = effective_needs(wf)
    assert {k: [(n.job, n.on) for n in v] for k, v in needs.items()} == {
        "c": [], "a": [("c", "success")], "b": [("a", "success")]}
    assert topological_order(wf) == ["c", "a", "b"]


def test_sequential_fallback_lets_templates_read_earlier_jobs() -> None:
    load_workflow(doc(job("a"), job("b"), job("c", env={"X": "{{ jobs.a.output }}"})))
    p = only(doc(job("a"), job("b", env={"X": "{{ jobs.c.output }}"}), job("c")))
    assert "does not depend on 'c'" in p["message"]


def test_explicit_sequential_setting() -> None:
    wf = load_workflow(doc(job("a"), job("b"), settings={"execution": "sequential"}))
    assert [n.job for n in effective_needs(wf)["b"]] == ["a"]


def test_dag_execution_without_needs_makes_every_job_a_root() -> None:
    wf = load_workflow(doc(job("c"), job("a"), job("b"), settings={"execution": "dag"}))
    assert not wf.is_sequential
    assert effective_needs(wf) == {"c": [], "a": [], "b": []}
    assert topological_order(wf) == ["c", "a", "b"]
    p = only(doc(job("a"), job("b", env={"X": "{{ jobs.a.output }}"}), settings={"execution": "dag"}))
    assert "does not depend on 'a'" in p["message"]


def test_any_needs_turns_off_the_fallback() -> None:
    wf = load_workflow(doc(job("a"), job("b"), job("c", needs=["a"])))
    assert not wf.is_sequential
    assert effective_needs(wf)["b"] == []


def test_topological_order_is_stable_document_order() -> None:
    wf = load_workflow(doc(job("z"), job("m", needs=["z"]), job("b"), job("y", needs=["b", "m"]),
                           job("a"), job("k", needs=["z"])))
    assert topological_order(wf) == ["z", "b", "a", "m", "k", "y"]
    again = load_workflow(copy.deepcopy(doc(job("z"), job("m", needs=["z"]), job("b"),
                                            job("y", needs=["b", "m"]), job("a"), job("k", needs=["z"]))))
    assert topological_order(again) == topological_order(wf)


def test_topological_order_respects_every_edge() -> None:
    wf = load_workflow(doc(job("d", needs=["c"]), job("c", needs=["b"]), job("b", needs=["a"]), job("a")))
    assert topological_order(wf) == ["a", "b", "c", "d"]


# --- run inputs -------------------------------------------------------------------------------------

INPUTS = {
    "name": {"type": "string"},
    "depth": {"type": "string", "enum": ["basic", "detailed"], "default": "basic"},
    "limit": {"type": "integer", "default": 100},
    "ratio": {"type": "number", "required": False},
    "dry": {"type": "boolean", "default": False},
    "mode": {"type": "enum", "enum": ["a", 1], "required": False},
    "blob": {"type": "json", "required": False},
}


@pytest.fixture(scope="module")
def wf_inputs() -> Workflow:
    return load_workflow(doc(job("a"), inputs=INPUTS))


def input_error(wf: Workflow, given: dict[str, Any] | None) -> list[dict[str, Any]]:
    with pytest.raises(InputError) as info:
        resolve_inputs(wf, given)
    assert status_of(info.value) == 422 and info.value.details == info.value.problems
    return info.value.problems


def test_defaults_filled(wf_inputs: Workflow) -> None:
    assert resolve_inputs(wf_inputs, {"name": "x"}) == {
        "name": "x", "depth": "basic", "limit": 100, "ratio": None, "dry": False, "mode": None, "blob": None}


def test_given_values_kept(wf_inputs: Workflow) -> None:
    got = resolve_inputs(wf_inputs, {"name": "x", "depth": "detailed", "limit": 5, "ratio": 2,
                                     "dry": True, "mode": 1, "blob": {"k": [1]}})
    assert got["depth"] == "detailed" and got["limit"] == 5 and got["ratio"] == 2
    assert got["dry"] is True and got["mode"] == 1 and got["blob"] == {"k": [1]}


def test_missing_required(wf_inputs: Workflow) -> None:
    (p,) = input_error(wf_inputs, {})
    assert (p["input"], p["field"]) == ("name", "inputs.name")
    assert p["message"] == "input 'name' is required"
    input_error(wf_inputs, None)


def test_wrong_type(wf_inputs: Workflow) -> None:
    (p,) = input_error(wf_inputs, {"name": "x", "limit": "100"})
    assert p["input"] == "limit" and "must be of type integer" in p["message"] and "'limit'" in p["message"]


@pytest.mark.parametrize(("field", "value"), [("limit", True), ("limit", False), ("ratio", True)])
def test_booleans_are_not_numbers(wf_inputs: Workflow, field: str, value: bool) -> None:
    (p,) = input_error(wf_inputs, {"name": "x", field: value})
    assert p["input"] == field and "got bool" in p["message"]


def test_integer_rejects_float_and_number_accepts_int(wf_inputs: Workflow) -> None:
    (p,) = input_error(wf_inputs, {"name": "x", "limit": 1.5})
    assert p["input"] == "limit"
    assert resolve_inputs(wf_inputs, {"name": "x", "ratio": 3})["ratio"] == 3


def test_boolean_rejects_int(wf_inputs: Workflow) -> None:
    (p,) = input_error(wf_inputs, {"name": "x", "dry": 1})
    assert p["input"] == "dry"


def test_enum_miss(wf_inputs: Workflow) -> None:
    (p,) = input_error(wf_inputs, {"name": "x", "depth": "deep"})
    assert p["input"] == "depth"
    assert p["message"] == 'input \'depth\' must be one of ["basic", "detailed"], got "deep"'
    (p,) = input_error(wf_inputs, {"name": "x", "mode": "b"})
    assert p["input"] == "mode"


def test_unknown_input(wf_inputs: Workflow) -> None:
    (p,) = input_error(wf_inputs, {"name": "x", "colour": "blue"})
    assert (p["input"], p["field"]) == ("colour", "inputs.colour")
    assert p["message"] == "unknown input 'colour'"


def test_every_input_problem_at_once(wf_inputs: Workflow) -> None:
    found = input_error(wf_inputs, {"zzz": 1, "limit": "x", "depth": "deep"})
    assert sorted(p["input"] for p in found) == ["depth", "limit", "name", "zzz"]


def test_non_json_value_is_reported_not_crashed(wf_inputs: Workflow) -> None:
    (p,) = input_error(wf_inputs, {"name": {1, 2}})
    assert p["input"] == "name"
