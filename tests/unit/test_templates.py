"""The core's templates: sandboxed rendering and the references validation reads."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowforge.core import templates
from flowforge.core.templates import (
    RenderContext,
    TemplateError,
    is_template,
    references,
    render,
    root_names,
    to_env_value,
)

CTX: dict[str, Any] = {
    "inputs": {"n": 5, "name": "acme", "flag": False},
    "jobs": {
        "a": {"state": "COMPLETED", "output": {"rows": 3, "nested": {"k": [1, 2]}}, "error": None},
        "skipped": {"state": "SKIPPED", "output": None},
    },
    "run": {"id": "r-1"},
    "item": "file1.csv",
}


# --- single expression keeps its native type -----------------------------------------------------

@pytest.mark.parametrize(("source", "expected"), [
    ("{{ inputs.n }}", 5),
    ("  {{ inputs.n }}\n", 5),
    ("{{ inputs.flag }}", False),
    ("{{ jobs.a.output }}", {"rows": 3, "nested": {"k": [1, 2]}}),
    ("{{ jobs.a.output.nested.k }}", [1, 2]),
    ("{{ jobs.a.output.nested.k[1] }}", 2),
    ("{{ jobs['a'].output['rows'] }}", 3),
    ("{{ inputs.n + 1 }}", 6),
    ("{{ inputs.n > 2 }}", True),
    ("{{ item }}", "file1.csv"),
    ("{{- inputs.n -}}", 5),
    ("{{+ inputs.n +}}", 5),
    ("{{-inputs.n}}", 5),  # whitespace control, not negation
    ("{{ -inputs.n }}", -5),
    ("{{ 'a}}b' }}", "a}}b"),
])
def test_single_expression_keeps_native_type(source: str, expected: Any) -> None:
    got = render(source, CTX)
    assert got == expected and type(got) is type(expected)


# --- mixed text renders a string --------------------------------------------------------------------

@pytest.mark.parametrize(("source", "expected"), [
    ("n={{ inputs.n }}", "n=5"),
    ("{{ inputs.n }}{{ inputs.name }}", "5acme"),
    ("{{ inputs.n }} and {{ inputs.n }}", "5 and 5"),
    ("{{ inputs.n -}}  x  {{- inputs.n }}", "5x5"),
    ("{% if inputs.n > 2 %}big{% else %}small{% endif %}", "big"),
    ("{% for k in jobs.a.output.nested.k %}[{{ k }}]{% endfor %}", "[1][2]"),
    ("rows: {{ jobs.a.output.rows }}", "rows: 3"),
    ("{{ '{{' }}", "{{"),
])
def test_mixed_text_renders_a_string(source: str, expected: str) -> None:
    assert render(source, CTX) == expected


def test_non_templates_pass_through_untouched() -> None:
    for value in ("plain", "a { b } c", 42, 1.5, True, None):
        assert render(value, CTX) == value


def test_render_recurses_into_lists_and_dicts() -> None:
    got = render({"a": ["{{ inputs.n }}", "x{{ inputs.n }}", 7], "b": {"c": "{{ jobs.a.output.rows }}"}}, CTX)
    assert got == {"a": [5, "x5", 7], "b": {"c": 3}}


# --- undefined job output ----------------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "{{ jobs.skipped.output }}",
    "{{ jobs.skipped.output.rows }}",
    "{{ jobs.never_ran.output.rows.deeper }}",
    "{{ inputs.missing }}",
    "{{ jobs.a.output.nope }}",
])
def test_undefined_single_expression_is_none(source: str) -> None:
    assert render(source, CTX) is None


def test_undefined_in_text_is_empty() -> None:
    assert render("[{{ jobs.never_ran.output.rows }}]", CTX) == "[]"
    assert render("[{{ jobs.skipped.output.rows }}]", CTX) == "[]"


# --- the sandbox ------------------------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "x {{ ''.__class__ }} y",
    "{{ inputs.__class__ }}",
    "{{ jobs.never_ran.__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ jobs.a.output.nested.k.append(3) }}",
    "{{ inputs.update(n=6) }}",
    "{{ range(10 ** 9) | list | length }}",
])
def test_sandbox_blocks_escapes_with_a_template_error(source: str) -> None:
    with pytest.raises(TemplateError):
        render(source, CTX)
    assert CTX["inputs"]["n"] == 5 and CTX["jobs"]["a"]["output"]["nested"]["k"] == [1, 2]


def test_sandbox_error_says_what_was_unsafe() -> None:
    with pytest.raises(TemplateError, match=r"__class__.*unsafe"):
        render("{{ ''.__class__.__mro__ }}", CTX)


def test_no_imports_or_builtins() -> None:
    assert render("{{ __import__ }}", CTX) is None
    with pytest.raises(TemplateError):
        render("{{ __import__('os').system('true') }}", CTX)


@pytest.mark.parametrize("source", ["{{ inputs.n", "{% if %}", "{{ }}", "{% for %}{% endfor %}"])
def test_syntax_errors_are_template_errors(source: str) -> None:
    with pytest.raises(TemplateError, match="does not parse"):
        render(source, CTX)


def test_runtime_errors_are_template_errors() -> None:
    with pytest.raises(TemplateError, match="division by zero"):
        render("{{ 1 / 0 }}", CTX)
    with pytest.raises(TemplateError):
        render("{{ 'not json' | fromjson }}", CTX)


# --- filters ----------------------------------------------------------------------------------------

def test_tojson_filter_is_sorted_json() -> None:
    assert render("{{ jobs.a.output | tojson }}", CTX) == '{"nested": {"k": [1, 2]}, "rows": 3}'
    assert render("x={{ inputs.name | tojson }}", CTX) == 'x="acme"'
    assert render("{{ jobs.skipped.output | tojson }}", CTX) == "null"


def test_fromjson_filter() -> None:
    assert render("{{ '{\"a\": [1]}' | fromjson }}", CTX) == {"a": [1]}


# --- references, root names, helpers ------------------------------------------------------------------

def test_references_attribute_and_item_forms() -> None:
    refs = list(references("{{ jobs.a.output.x }} {{ jobs['b'].state }} {{ inputs.n }} "
                           "{% if run.id %}{{ item }}{% endif %}"))
    assert refs == [("jobs", "a"), ("jobs", "b"), ("inputs", "n"), ("run", "id")]


def test_references_in_filters_loops_and_conditions() -> None:
    refs = set(references("{% for f in jobs.lister.output.files %}{{ f }}{% endfor %}"
                          "{{ jobs.c.output | tojson }}{% if inputs.flag %}x{% endif %}"))
    assert {("jobs", "lister"), ("jobs", "c"), ("inputs", "flag")} <= refs


def test_references_of_plain_text_and_dynamic_keys() -> None:
    assert list(references("no template here")) == []
    assert list(references("{{ jobs[inputs.which] }}")) == [("inputs", "which")]


def test_references_raise_on_bad_syntax() -> None:
    with pytest.raises(TemplateError, match="does not parse"):
        list(references("{{ jobs.a.output"))


def test_root_names_exclude_loop_and_set_variables() -> None:
    assert root_names("{% for f in jobs.a.output %}{{ f }}{% endfor %}{% set z = 1 %}{{ z }}{{ item }}") == {
        "jobs", "item"}
    assert root_names("{{ secrets.token }}") == {"secrets"}


@pytest.mark.parametrize(("value", "expected"), [
    ("{{ x }}", True), ("{% if x %}{% endif %}", True), ("plain", False), ("{ x }", False),
    (5, False), (None, False), (["{{ x }}"], False),
])
def test_is_template(value: Any, expected: bool) -> None:
    assert is_template(value) is expected


@pytest.mark.parametrize(("value", "expected"), [
    ("text", "text"), (None, ""), (5, "5"), (True, "true"), ({"b": 1, "a": [1]}, '{"a": [1], "b": 1}'),
])
def test_to_env_value(value: Any, expected: str) -> None:
    assert to_env_value(value) == expected


# --- keys before methods, strict completed outputs ------------------------------------------------

@pytest.mark.parametrize("name", ["items", "get", "keys", "values", "update", "pop", "copy"])
def test_a_job_named_like_a_dict_method_is_reachable(name: str) -> None:
    ctx = {"jobs": {name: {"state": "COMPLETED", "output": {"n": 7, "items": [1]}}}}
    assert render(f"{{{{ jobs.{name}.output.n }}}}", ctx) == 7
    assert render(f"n={{{{ jobs.{name}.output.n }}}}", ctx) == "n=7"
    assert render(f"{{{{ jobs.{name}.output.items }}}}", ctx) == [1]  # keys inside outputs too
    # a method is still there where no key shadows it
    assert render("{{ jobs.values() | list | length }}" if name != "values"
                  else "{{ jobs.keys() | list | length }}", ctx) == 1


def _strict_ctx() -> RenderContext:
    output = {"rows": 3, "nested": {"k": [1, {"deep": True}]}}
    jobs = {"done": {"state": "COMPLETED", "output": output},
            "skipped": {"state": "SKIPPED", "output": None}}
    return RenderContext({"jobs": jobs, "inputs": {"x": None}},
                         {id(output): "jobs.done.output"})


@pytest.mark.parametrize(("source", "path"), [
    ("{{ jobs.done.output.missing }}", "jobs.done.output has no field 'missing'"),
    ("{{ jobs.done.output['missing'] }}", "jobs.done.output has no field 'missing'"),
    ("rows: {{ jobs.done.output.nested.nope }}", "jobs.done.output.nested has no field 'nope'"),
    ("{{ jobs.done.output.nested.k[1].gone }}", "jobs.done.output.nested.k[1] has no field 'gone'"),
])
def test_a_field_missing_from_a_completed_output_names_the_template(source: str, path: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(source, _strict_ctx())
    assert path in str(info.value) and repr(source.strip())[1:20] in str(info.value)


def test_what_is_not_a_completed_output_stays_lenient() -> None:
    ctx = _strict_ctx()
    assert render("{{ jobs.skipped.output.rows }}", ctx) is None  # a skipped job has no output
    assert render("{{ inputs.x.y }}", ctx) is None
    assert render("{{ jobs.done.output.rows }}", ctx) == 3
    assert render("{{ jobs.done.output.missing | default('d') }}", {"jobs": {}}) == "d"
    # without a strict context (webhook inputs, the API) nothing is strict
    assert render("{{ body.nope }}", {"body": {"a": 1}}) is None


@pytest.mark.parametrize("source", [
    "{{ jobs.a.output.rows }}", "{{ jobs['x-y'].output }}", "{{ secrets.tok }}", "{{ secrets }}",
    "{{ item }}", "{{- inputs.n -}}", "{{ jobs.a.output[0].b }}", "{{ range }}",
    "{{ run.id }}", "{{ trigger.upstream['etl'].outputs.total }}", '{{ jobs["a"][0] }}',
])
def test_the_path_fast_path_agrees_with_jinja(source: str) -> None:
    fast = templates._path_analysis(source)
    assert fast is not None and fast == templates._tree_analysis(source)


_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
_SEGMENT = st.one_of(_NAME.map(lambda n: f".{n}"), _NAME.map(lambda n: f"['{n}']"),
                     st.integers(0, 99).map(lambda i: f"[{i}]"))


@given(root=_NAME, segments=st.lists(_SEGMENT, max_size=4), pad=st.sampled_from(["", " ", "  "]))
def test_any_dotted_path_reads_the_same_both_ways(root: str, segments: list[str],
                                                  pad: str) -> None:
    source = "{{" + pad + root + "".join(segments) + pad + "}}"
    fast = templates._path_analysis(source)
    try:
        slow = templates._tree_analysis(source)
    except TemplateError:
        assert fast is None  # what Jinja refuses, the fast path leaves to Jinja
        return
    if fast is not None:
        assert fast == slow, source


@pytest.mark.parametrize("source", [
    "{{ 'x' * 100000000 }}", "{{ 100000000 * 'x' }}", "{{ [0] * 10000000 }}",
    "{{ 'x'.ljust(100000000) }}", "{{ ('x' * 1000) | replace('x', 'y' * 1001) }}",
    "{{ ('a' * 1000).replace('a', 'b' * 2000) }}", "{{ 'x' | center(100000000) }}",
    "{% for i in range(2000) %}{{ 'y' * 999 }}{% endfor %}",
])
def test_a_template_cannot_make_a_huge_value(source: str) -> None:
    with pytest.raises(TemplateError, match="more than the 1,000,000"):
        render(source, {})


def test_huge_powers_are_refused_and_ordinary_arithmetic_is_not() -> None:
    with pytest.raises(TemplateError, match="bits"):
        render("{{ 10 ** 100000 }}", {})
    assert render("{{ 2 ** 10 }}", {}) == 1024
    assert render("{{ 'ab' * 3 }}", {}) == "ababab"
    assert render("{{ ('x' * 10) | replace('x', 'yz') }}", {}) == "yz" * 10
    assert render("{{ 'a' + 'b' }}", {}) == "ab"
