"""Triggers without a server: ids, cycles, fire times, the Prefect objects they compile to."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime

import pytest

from flowforge.controlplane import triggers as trigger_sync
from flowforge.core.errors import SpecError
from flowforge.core.triggers import (
    AnyTrigger,
    DependencyTrigger,
    ScheduleTrigger,
    WebhookTrigger,
    assign_ids,
    config_key,
    duplicate_problems,
    find_cycle,
    next_fire_times,
)
from flowforge.core.validation import load_workflow
from flowforge.runtime.upstream import upstream_run_ids

JOBS = [{"name": "a", "runtime": "bash", "script": "true"}]


def doc(*triggers: dict[str, object]) -> dict[str, object]:
    return {"name": "down", "jobs": JOBS, "triggers": list(triggers)}


def test_bad_cron_and_timezone_are_422_saying_why() -> None:
    with pytest.raises(SpecError) as bad:
        load_workflow(doc({"type": "schedule", "cron": "61 * * * *"}))
    assert bad.value.problems[0]["field"] == "triggers[0].cron"
    assert "out of range" in bad.value.problems[0]["message"]
    with pytest.raises(SpecError) as tz:
        load_workflow(doc({"type": "schedule", "cron": "0 2 * * *", "timezone": "Mars/Base"}))
    assert "IANA" in tz.value.problems[0]["message"]


def test_next_fire_times_follow_the_timezone_across_dst() -> None:
    t = ScheduleTrigger(cron="0 2 * * *", timezone="America/New_York")
    times = next_fire_times(t, 5, after=datetime(2026, 3, 6, 12, tzinfo=UTC))
    assert len(times) == 5 and all(x.hour in (2, 3) for x in times)
    utc_hours = [x.astimezone(UTC).hour for x in times]
    assert utc_hours[0] == 7 and utc_hours[-1] == 6  # EST -> EDT on 8 March


def test_assign_ids_keeps_stored_ids_by_name_then_by_config() -> None:
    counter = itertools.count()
    stored = [("id-a", "schedule", "nightly", config_key(ScheduleTrigger(cron="0 2 * * *"))),
              ("id-b", "webhook", "hook", config_key(WebhookTrigger()))]
    triggers: list[AnyTrigger] = [ScheduleTrigger(name="nightly", cron="0 3 * * *"),  # same name, new cron
                WebhookTrigger(),  # no name: same config as id-b
                ScheduleTrigger(cron="*/5 * * * *")]  # new
    out = assign_ids(triggers, stored, new_id=lambda: f"new-{next(counter)}")
    assert [t.id for t in out] == ["id-a", "id-b", "new-0"]
    assert [t.name for t in out] == ["nightly", "webhook-2", "schedule-3"]
    assert isinstance(out[0], ScheduleTrigger) and out[0].cron == "0 3 * * *"


def test_duplicate_names_are_reported() -> None:
    problems = duplicate_problems([WebhookTrigger(name="x"), WebhookTrigger(name="x")])
    assert problems == [{"field": "triggers[1].name", "message": "trigger name 'x' is used twice"}]


def test_find_cycle_names_the_loop() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(edges, "a") == ["a", "b", "c", "a"]
    assert find_cycle(edges, "d") is None
    assert find_cycle({"a": {"a"}}, "a") == ["a", "a"]


def test_schedules_are_keyed_by_trigger_id_and_carry_the_trigger() -> None:
    wf = load_workflow(doc({"id": "s1", "name": "n", "type": "schedule", "cron": "* * * * *",
                            "enabled": False, "inputs": {}}))
    want = trigger_sync.desired_schedules(wf)
    assert list(want) == ["s1"]
    assert want["s1"].active is False and want["s1"].slug == "s1"
    assert want["s1"].parameters["flowforge_trigger"]["type"] == "schedule"


def test_dependency_any_is_one_event_trigger_on_the_upstream_deployments() -> None:
    wf = load_workflow(doc({"id": "d1", "type": "dependency", "upstream": ["a", "b"],
                            "on": "failure", "logic": "any"}))
    dep = uuid.uuid4()
    (auto,) = trigger_sync.desired_automations(wf, dep).values()
    assert auto.name == "flowforge:down:d1"
    trig = auto.trigger.model_dump(mode="json")
    assert trig["type"] == "event"
    assert set(trig["expect"]) == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert trig["match_related"]["prefect.resource.name"] == ["a", "b"]
    action = auto.actions[0].model_dump(mode="json")
    assert action["deployment_id"] == str(dep)
    assert "events" in action["parameters"]["flowforge_trigger"]["upstream_runs"]


def test_dependency_all_is_a_compound_trigger_with_a_window() -> None:
    wf = load_workflow(doc({"id": "d2", "type": "dependency", "upstream": ["a", "b"],
                            "logic": "all", "within": 600}))
    (auto,) = trigger_sync.desired_automations(wf, uuid.uuid4()).values()
    trig = auto.trigger.model_dump(mode="json")
    assert trig["type"] == "compound" and trig["require"] == "all" and trig["within"] == 600
    assert [t["match_related"]["prefect.resource.name"] for t in trig["triggers"]] == ["a", "b"]
    assert all(t["expect"] == ["prefect.flow-run.Completed"] for t in trig["triggers"])


def test_dependency_defaults() -> None:
    t = DependencyTrigger(upstream=["a"])
    assert (t.on, t.logic, t.within) == ("success", "any", 86400)
    with pytest.raises(ValueError):
        DependencyTrigger(upstream=["a", "a"])


def test_event_trigger_and_webhook_compile() -> None:
    wf = load_workflow(doc({"id": "e1", "type": "event", "event": "shop.order",
                            "match": {"shop.region": "eu"}},
                           {"id": "w1", "type": "webhook", "inputs": {"x": "{{ body.x }}"}}))
    autos = trigger_sync.desired_automations(wf, uuid.uuid4())
    assert list(autos) == ["flowforge:down:e1"]  # a webhook needs no Prefect object
    trig = autos["flowforge:down:e1"].trigger.model_dump(mode="json")
    assert trig["expect"] == ["shop.order"]  # and only events of its own namespace
    assert trig["match"] == {"shop.region": "eu", "flowforge.namespace": "default"}


def test_orphans_are_automations_of_unknown_workflows() -> None:
    wf = load_workflow(doc({"id": "e1", "type": "event", "event": "x"}))
    from prefect.events.schemas.automations import Automation

    core = trigger_sync.desired_automations(wf, uuid.uuid4())["flowforge:down:e1"]
    auto = Automation(**core.model_dump(), id=uuid.uuid4())
    assert trigger_sync.orphans([auto], {"down"}) == []
    assert trigger_sync.orphans([auto], {"other"}) == [auto]


def test_upstream_run_ids_are_parsed_from_the_rendered_template() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    rendered = f"prefect.flow-run.{a} prefect.flow-run.{b} prefect.flow-run.{a} "
    assert upstream_run_ids({"upstream_runs": rendered}) == [str(a), str(b)]
    assert upstream_run_ids({}) == []
