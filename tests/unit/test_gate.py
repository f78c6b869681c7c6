"""The run-if gate against an independent reference written from Airflow's TriggerRuleDep.

The reference below is transcribed from apache-airflow-core 3.3.2,
`airflow/ti_deps/deps/trigger_rule_dep.py` (same logic in apache/airflow main,
`airflow-core/src/airflow/ti_deps/deps/trigger_rule_dep.py`):

* `_UpstreamTIStates.calculate` (lines 81-86) counts upstream task instances by exact state:
  success, skipped, failed, upstream_failed, removed; `done` is all finished ones.
* `_get_dep_statuses` (lines 110-115): no upstreams or `always` -> passes at once.
* `_evaluate_direct_relatives`, the `flag_upstream_failed` block (lines 425-469), picks the state
  a task that will not run gets (SKIPPED / UPSTREAM_FAILED);
* the block after it (lines 507-616) decides whether the dependency passes.

The gate is evaluated once every upstream is done, so `upstream_done` is true, `done == upstream`
and `removed == 0` (FlowForge has no mapped upstreams). CANCELLED is FlowForge's own outcome and
counts as Airflow's `failed` (a killed Airflow task is marked failed), as gate.py documents.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowforge.core.gate import (
    ALIASES,
    ALL_RULES,
    EDGE_MODES,
    RULES,
    Decision,
    Edge,
    Upstream,
    decide,
    edge_met,
)

OUTCOMES = ("COMPLETED", "FAILED", "SKIPPED", "UPSTREAM_FAILED")
ALL_OUTCOMES = (*OUTCOMES, "CANCELLED")
AIRFLOW_STATE = {"COMPLETED": "success", "FAILED": "failed", "SKIPPED": "skipped",
                 "UPSTREAM_FAILED": "upstream_failed", "CANCELLED": "failed"}
TO_FLOWFORGE = {"skipped": "SKIPPED", "upstream_failed": "UPSTREAM_FAILED"}
RULE_NAMES = sorted(RULES | set(ALIASES))
EDGE_ONS = ("success", "failure", "completion", "always", "true", "false")
CONDITIONS = (None, True, False)


# --- the reference: Airflow's TriggerRuleDep, all upstreams done ------------------------------

def airflow_trigger_rule(rule: str, states: list[str]) -> tuple[bool, str | None]:
    """`(passes, new_state)` for Airflow task-instance states of the direct upstreams."""
    counter = Counter(states)
    success = counter["success"]
    skipped = counter["skipped"]
    failed = counter["failed"]
    upstream_failed = counter["upstream_failed"]
    removed = counter["removed"]
    done = sum(counter.values())
    upstream = len(states)
    upstream_done = done >= upstream

    if not states or rule == "always":
        return True, None

    new_state = None
    if rule == "all_success":
        if upstream_failed or failed:
            new_state = "upstream_failed"
        elif skipped:
            new_state = "skipped"
    elif rule == "all_failed":
        if success or skipped:
            new_state = "skipped"
    elif rule == "one_success":
        if upstream_done and done == skipped:
            new_state = "skipped"
        elif upstream_done and success <= 0:
            new_state = "upstream_failed"
    elif rule == "one_failed":
        if upstream_done and not (failed or upstream_failed):
            new_state = "skipped"
    elif rule == "one_done":
        if upstream_done and not (failed or success):
            new_state = "skipped"
    elif rule == "none_failed":
        if upstream_failed or failed:
            new_state = "upstream_failed"
    elif rule == "none_failed_min_one_success":
        if upstream_failed or failed:
            new_state = "upstream_failed"
        elif skipped == upstream:
            new_state = "skipped"
        elif upstream_done and success == 0:
            new_state = "upstream_failed"
    elif rule == "none_skipped":
        if skipped:
            new_state = "skipped"
    elif rule == "all_skipped":  # noqa: SIM102 - kept in Airflow's shape
        if success or failed or upstream_failed:
            new_state = "skipped"

    if rule == "one_success":
        passes = success > 0
    elif rule == "one_failed":
        passes = bool(failed or upstream_failed)
    elif rule == "one_done":
        passes = success + failed > 0
    elif rule == "all_success":
        passes = upstream - success - removed <= 0
    elif rule == "all_failed":
        passes = upstream - failed - upstream_failed - removed <= 0
    elif rule == "all_done":
        passes = upstream_done
    elif rule == "none_failed":
        passes = upstream - success - skipped - removed <= 0
    elif rule == "none_failed_min_one_success":
        passes = upstream - success - skipped - removed <= 0 and success > 0
    elif rule == "none_skipped":
        passes = upstream_done and skipped == 0
    elif rule == "all_skipped":
        passes = upstream - skipped <= 0
    else:
        raise AssertionError(f"no strategy for {rule}")
    return passes, new_state


def reference(rule: str, outcomes: list[str]) -> tuple[bool, str | None]:
    """The reference in FlowForge terms: `(run, state of a job that does not run)`."""
    rule = {"at_least_one_success": "one_success", "at_least_one_failed": "one_failed"}.get(rule, rule)
    passes, new_state = airflow_trigger_rule(rule, [AIRFLOW_STATE[o] for o in outcomes])
    # With every upstream done Airflow never leaves a task waiting: it either passes, or the
    # flag_upstream_failed block has given it a state (and then it does not pass).
    assert passes != (new_state is not None), (rule, outcomes, passes, new_state)
    return passes, TO_FLOWFORGE[new_state] if new_state else None


def rule_decision(rule: str, outcomes: list[str] | tuple[str, ...]) -> Decision:
    names = [f"up{i}" for i in range(len(outcomes))]
    ups = {n: Upstream(n, o) for n, o in zip(names, outcomes, strict=True)}
    return decide(rule, [Edge(n) for n in names], ups)


MULTISETS = [combo for k in range(1, 5) for combo in itertools.combinations_with_replacement(OUTCOMES, k)]


def test_rule_sets_are_the_designed_ones() -> None:
    assert set(RULES) == {
        "all_success", "all_failed", "all_done", "all_skipped", "one_success", "one_failed",
        "one_done", "none_failed", "none_failed_min_one_success", "none_skipped", "always"}
    assert ALIASES == {"at_least_one_success": "one_success", "at_least_one_failed": "one_failed"}
    assert RULES | EDGE_MODES | set(ALIASES) == ALL_RULES
    assert len(MULTISETS) == 4 + 10 + 20 + 35


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_every_rule_on_every_multiset_matches_airflow(rule: str) -> None:
    for outcomes in MULTISETS:
        run, state = reference(rule, list(outcomes))
        got = rule_decision(rule, outcomes)
        assert (got.run, got.state) == (run, state), (rule, outcomes)


@given(rule=st.sampled_from(RULE_NAMES),
       outcomes=st.lists(st.sampled_from(ALL_OUTCOMES), min_size=1, max_size=4))
def test_rule_mode_matches_airflow_reference(rule: str, outcomes: list[str]) -> None:
    """Any order, any rule, CANCELLED included (as Airflow's `failed`)."""
    run, state = reference(rule, outcomes)
    got = rule_decision(rule, outcomes)
    assert got.run is run
    assert got.state == state
    if run:
        assert got == Decision(run=True)
    else:
        assert got.reason is not None
        assert rule in got.reason
        for i, outcome in enumerate(outcomes):
            assert f"up{i}={outcome}" in got.reason


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_aliases_behave_as_their_airflow_rule(alias: str) -> None:
    for outcomes in MULTISETS:
        a, b = rule_decision(alias, outcomes), rule_decision(ALIASES[alias], outcomes)
        assert (a.run, a.state) == (b.run, b.state)


def test_alias_reason_names_the_rule_as_written_and_its_airflow_name() -> None:
    got = rule_decision("at_least_one_success", ["FAILED", "SKIPPED"])
    assert got.reason is not None
    assert "at_least_one_success" in got.reason and "one_success" in got.reason


def test_plain_needs_in_edge_mode_are_airflow_all_success() -> None:
    for outcomes in MULTISETS:
        run, state = reference("all_success", list(outcomes))
        got = rule_decision("all", outcomes)
        assert (got.run, got.state) == (run, state), outcomes


# --- the run-if examples, as a table -------------------------------------------------------------------

R, S, U = "run", "SKIPPED", "UPSTREAM_FAILED"


@pytest.mark.parametrize(("rule", "outcomes", "expected"), [
    # all_success: a failed upstream -> UPSTREAM_FAILED, only a skipped one -> SKIPPED
    ("all_success", ["COMPLETED", "FAILED"], U),
    ("all_success", ["COMPLETED", "SKIPPED"], S),
    ("all_success", ["SKIPPED", "FAILED"], U),
    ("all_success", ["COMPLETED", "COMPLETED"], R),
    # UPSTREAM_FAILED counts as failed downstream
    ("all_success", ["COMPLETED", "UPSTREAM_FAILED"], U),
    ("all_success", ["SKIPPED", "UPSTREAM_FAILED"], U),
    ("one_failed", ["COMPLETED", "UPSTREAM_FAILED"], R),
    ("at_least_one_failed", ["UPSTREAM_FAILED"], R),
    ("all_failed", ["FAILED", "UPSTREAM_FAILED"], R),
    ("none_failed", ["COMPLETED", "UPSTREAM_FAILED"], U),
    ("none_failed_min_one_success", ["SKIPPED", "UPSTREAM_FAILED"], U),
    # ... except for one_done, which in Airflow counts only success and failed (line 452)
    ("one_done", ["UPSTREAM_FAILED", "UPSTREAM_FAILED"], S),
    ("one_done", ["UPSTREAM_FAILED", "FAILED"], R),
    ("one_done", ["SKIPPED", "COMPLETED"], R),
    # the rest of the table
    ("all_failed", ["FAILED", "COMPLETED"], S),
    ("all_failed", ["FAILED", "SKIPPED"], S),
    ("all_done", ["FAILED", "SKIPPED", "UPSTREAM_FAILED", "COMPLETED"], R),
    ("always", ["FAILED", "UPSTREAM_FAILED"], R),
    ("all_skipped", ["SKIPPED", "SKIPPED"], R),
    ("all_skipped", ["SKIPPED", "COMPLETED"], S),
    ("all_skipped", ["SKIPPED", "UPSTREAM_FAILED"], S),
    ("one_success", ["FAILED", "COMPLETED"], R),
    ("one_success", ["SKIPPED", "SKIPPED"], S),
    ("one_success", ["SKIPPED", "FAILED"], U),
    ("at_least_one_success", ["UPSTREAM_FAILED", "SKIPPED"], U),
    ("one_failed", ["COMPLETED", "SKIPPED"], S),
    ("none_failed", ["COMPLETED", "SKIPPED"], R),
    ("none_failed", ["SKIPPED", "SKIPPED"], R),
    ("none_failed_min_one_success", ["SKIPPED", "SKIPPED"], S),
    ("none_failed_min_one_success", ["SKIPPED", "COMPLETED"], R),
    ("none_skipped", ["FAILED", "UPSTREAM_FAILED"], R),
    ("none_skipped", ["COMPLETED", "SKIPPED"], S),
    # CANCELLED counts as failed
    ("all_success", ["CANCELLED"], U),
    ("one_failed", ["CANCELLED", "COMPLETED"], R),
])
def test_design_table(rule: str, outcomes: list[str], expected: str) -> None:
    got = rule_decision(rule, outcomes)
    if expected == R:
        assert got == Decision(run=True)
    else:
        assert (got.run, got.state) == (False, expected)


@pytest.mark.parametrize("run_if", sorted(ALL_RULES))
def test_no_upstreams_always_runs(run_if: str) -> None:
    assert decide(run_if, [], {}) == Decision(run=True)


def test_unknown_rule_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="sometimes"):
        rule_decision("sometimes", ["COMPLETED"])


# --- edge mode ------------------------------------------------------------------------------------

FAILED_LIKE = {"FAILED", "UPSTREAM_FAILED", "CANCELLED"}


def expected_edge_met(on: str, outcome: str, condition: bool | None) -> bool:
    """The edge table (CANCELLED counted as failed, as gate.py documents)."""
    return {
        "success": outcome == "COMPLETED",
        "failure": outcome in FAILED_LIKE,
        "completion": outcome == "COMPLETED" or outcome in FAILED_LIKE,
        "always": True,
        "true": outcome == "COMPLETED" and condition is True,
        "false": outcome == "COMPLETED" and condition is False,
    }[on]


@pytest.mark.parametrize("on", EDGE_ONS)
@pytest.mark.parametrize("outcome", ALL_OUTCOMES)
@pytest.mark.parametrize("condition", CONDITIONS)
def test_edge_met_table(on: str, outcome: str, condition: bool | None) -> None:
    assert edge_met(on, Upstream("a", outcome, condition)) is expected_edge_met(on, outcome, condition)  # type: ignore[arg-type]


@pytest.mark.parametrize(("on", "outcome", "condition", "runs"), [
    ("success", "COMPLETED", None, True),
    ("success", "SKIPPED", None, False),
    ("failure", "FAILED", None, True),
    ("failure", "UPSTREAM_FAILED", None, True),  # an alert still fires when its job could not run
    ("failure", "COMPLETED", None, False),
    ("failure", "SKIPPED", None, False),
    ("completion", "UPSTREAM_FAILED", None, True),
    ("completion", "SKIPPED", None, False),
    ("always", "SKIPPED", None, True),
    ("true", "COMPLETED", True, True),
    ("true", "COMPLETED", None, False),
    ("true", "FAILED", True, False),
    ("false", "COMPLETED", False, True),
    ("false", "COMPLETED", True, False),
])
def test_edge_examples(on: str, outcome: str, condition: bool | None, runs: bool) -> None:
    got = decide("all", [Edge("a", on)], {"a": Upstream("a", outcome, condition)})  # type: ignore[arg-type]
    assert got.run is runs


edge_strategy = st.lists(
    st.tuples(st.sampled_from(EDGE_ONS), st.sampled_from(ALL_OUTCOMES), st.sampled_from(CONDITIONS)),
    min_size=1, max_size=4)


@given(mode=st.sampled_from(sorted(EDGE_MODES)), specs=edge_strategy)
def test_edge_mode(mode: str, specs: list[tuple[str, str, bool | None]]) -> None:
    names = [f"j{i}" for i in range(len(specs))]
    edges = [Edge(n, on) for n, (on, _, _) in zip(names, specs, strict=True)]  # type: ignore[arg-type]
    ups = {n: Upstream(n, o, c) for n, (_, o, c) in zip(names, specs, strict=True)}  # type: ignore[arg-type]
    met = [expected_edge_met(on, o, c) for on, o, c in specs]
    got = decide(mode, edges, ups)
    should_run = all(met) if mode == "all" else any(met)
    if should_run:
        assert got == Decision(run=True)
        return
    unmet = [(n, spec) for n, spec, ok in zip(names, specs, met, strict=True) if not ok]
    # UPSTREAM_FAILED iff an unmet `on: success` edge points at a failed upstream, else SKIPPED
    blocked = any(on == "success" and o in FAILED_LIKE for _, (on, o, _) in unmet)
    assert got.run is False
    assert got.state == ("UPSTREAM_FAILED" if blocked else "SKIPPED")
    assert got.reason is not None and got.reason.startswith(f"run_if {mode}:")
    for n, (on, o, _) in unmet:
        assert f"{n} on {on} (was {o}" in got.reason
    for n, ok in zip(names, met, strict=True):
        if ok:
            assert f"{n} on" not in got.reason


@pytest.mark.parametrize(("mode", "specs", "expected"), [
    # run_if all: one unmet edge is enough to stop the job
    ("all", [("success", "COMPLETED"), ("success", "SKIPPED")], S),
    ("all", [("success", "COMPLETED"), ("success", "FAILED")], U),
    ("all", [("success", "SKIPPED"), ("success", "UPSTREAM_FAILED")], U),
    # the branch not taken is SKIPPED, also when its upstream failed (no unmet success edge)
    ("all", [("failure", "COMPLETED")], S),
    ("all", [("true", "FAILED")], S),
    ("all", [("completion", "SKIPPED")], S),
    # run_if any: one met edge is enough
    ("any", [("success", "FAILED"), ("failure", "FAILED")], R),
    ("any", [("success", "SKIPPED"), ("success", "COMPLETED")], R),
    ("any", [("success", "SKIPPED"), ("success", "FAILED")], U),
    ("any", [("success", "SKIPPED"), ("failure", "COMPLETED")], S),
    ("any", [("failure", "COMPLETED"), ("success", "UPSTREAM_FAILED")], U),
])
def test_run_if_all_vs_any(mode: str, specs: list[tuple[str, str]], expected: str) -> None:
    names = [f"j{i}" for i in range(len(specs))]
    edges = [Edge(n, on) for n, (on, _) in zip(names, specs, strict=True)]  # type: ignore[arg-type]
    ups = {n: Upstream(n, o) for n, (_, o) in zip(names, specs, strict=True)}  # type: ignore[arg-type]
    got = decide(mode, edges, ups)
    if expected == R:
        assert got.run is True
    else:
        assert (got.run, got.state) == (False, expected)


def test_edge_reason_names_upstreams_condition_and_mode() -> None:
    got = decide("all", [Edge("check", "true"), Edge("load", "success")],
                 {"check": Upstream("check", "COMPLETED", False), "load": Upstream("load", "COMPLETED")})
    assert got == Decision(False, "SKIPPED", "run_if all: not met: check on true (was COMPLETED, condition False)")


def test_rule_reason_names_every_upstream_and_the_rule() -> None:
    got = rule_decision("all_success", ["COMPLETED", "FAILED", "SKIPPED"])
    assert got == Decision(False, "UPSTREAM_FAILED",
                           "run_if all_success: upstreams up0=COMPLETED, up1=FAILED, up2=SKIPPED")
