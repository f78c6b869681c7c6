"""Jinja templates over run data, in a sandbox.

Templates are data, never code: the sandbox stops attribute escapes (`__class__`, `mro`) and
there is no import. A value that is exactly one `{{ expression }}` keeps its native type (a
dict stays a dict), so `params: {rows: "{{ jobs.a.output.rows }}"}` hands the script a number;
anything else renders to a string. The same module parses templates at validation time to find
the jobs and inputs they name, so a typo is a 422 before anything is stored.

Two rules make a template read what it says. A dict's keys come before its methods, so a job
named `items` or `get` is `jobs.items`, not `dict.items`. And a field missing from a completed
job's output is an error naming the template (Airflow's `StrictUndefined`), while everything
else that is missing, a skipped job's output above all, reads as empty: the run's context marks
which containers are strict (`RenderContext`).
"""

from __future__ import annotations

import contextvars
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from flowforge.core import template_bounds

# `{{- x -}}` / `{{+ x +}}` are whitespace control, not part of the expression
_SINGLE_EXPR = re.compile(r"^\s*\{\{[-+]?(?P<expr>.*?)[-+]?\}\}\s*$", re.DOTALL)


def _tojson(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


#: Containers read strictly in the render under way: `id(container)` -> how the template
#: reached it (`jobs.extract.output.rows`). Set by `render` from a `RenderContext`.
_STRICT: contextvars.ContextVar[dict[int, str] | None] = contextvars.ContextVar(
    "flowforge_strict_templates", default=None)


class RenderContext(dict[str, Any]):
    """A template context that also says which containers in it are read strictly.

    `strict` maps `id(container)` to its path; a key missing from such a container (or from
    any dict or list reached through it) fails the render instead of reading as empty. The
    containers must stay alive while the context does, which they do: the context holds them.
    """

    def __init__(self, values: Mapping[str, Any], strict: dict[int, str] | None = None) -> None:
        super().__init__(values)
        self.strict = strict or {}


class MissingFieldError(ValueError):
    """A strict container (a completed job's output) lacks the field a template names."""


class _Sandbox(ImmutableSandboxedEnvironment):
    # Operators that can grow a value by a factor the template picks (`template_bounds`).
    intercepted_binops = frozenset({"*", "**", "+"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        template_bounds.check_binop(operator, left, right)
        return template_bounds.check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        template_bounds.check_call(__obj, args, kwargs)
        return template_bounds.check_size(super().call(__context, __obj, *args, **kwargs))

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # Jinja's sandbox answers `''.__class__` with an Undefined, which ChainableUndefined
        # then renders as empty: the escape is stopped but silently. Make it an error instead.
        raise SecurityError(f"access to attribute {attribute!r} of "
                            f"{type(obj).__name__!r} object is unsafe")

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Keys before methods: Jinja tries the attribute first, so `jobs.items` would be the
        # dict's method and a job named `items` unreachable.
        if isinstance(obj, Mapping) and attribute in obj:
            return _strict_step(obj, attribute, obj[attribute])
        return _strict_step(obj, attribute, super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        return _strict_step(obj, argument, super().getitem(obj, argument))


def _strict_step(obj: Any, key: Any, value: Any) -> Any:
    strict = _STRICT.get()
    if not strict:
        return value
    path = strict.get(id(obj))
    if path is None:
        return value
    if isinstance(value, Undefined):
        raise MissingFieldError(f"{path} has no field {key!r}")
    if isinstance(value, dict | list):
        strict[id(value)] = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"
    return value


def _environment() -> ImmutableSandboxedEnvironment:
    # ChainableUndefined: `jobs.skipped_job.output.rows` is empty, not an error, at run time;
    # references to unknown jobs or inputs are caught earlier, by `references()`.
    env = _Sandbox(undefined=ChainableUndefined, autoescape=False)
    env.filters["tojson"] = _tojson
    env.filters["fromjson"] = json.loads
    for name, filter_ in list(env.filters.items()):
        env.filters[name] = template_bounds.bounded_filter(name, filter_)
    return env


_ENV = _environment()


class TemplateError(ValueError):
    """A template that does not parse or fails to render; the message says where."""


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def parse(source: str) -> nodes.Template:
    try:
        return _ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template does not parse: {exc.message}") from exc


@dataclass(frozen=True)
class Analysis:
    """What validation needs to know of a template, from one parse of it."""

    #: `(root, name)` for every `root.name` / `root['name']` (`("jobs", "extract")`).
    references: tuple[tuple[str, str], ...]
    #: The top-level variables it reads (loop variables and Jinja's globals left out).
    roots: frozenset[str]
    #: The secrets it names literally.
    secrets: frozenset[str]
    #: Whether it reads `secrets` any other way (`secrets[inputs.which]`): never allowed, since
    #: a job loads the secrets its templates name before it runs.
    computed_secret: bool


# The commonest template by far is one dotted path, `{{ jobs.extract.output.rows }}`: read
# without Jinja's parser, which costs ~170 us a template (1.7 s of a 10,000-job document).
_PATH = re.compile(r"""^\s*\{\{[-+]?\s*(?P<root>[A-Za-z_]\w*)(?P<rest>(?:\.[A-Za-z_]\w*"""
                   r"""|\[(?:'[^'\\]*'|"[^"\\]*"|\d+)\])*)\s*[-+]?\}\}\s*$""")
_SEGMENT = re.compile(r"""\.(?P<attr>[A-Za-z_]\w*)|\[(?:'(?P<sq>[^']*)'|"(?P<dq>[^"]*)"|(?P<int>\d+))\]""")
_KEYWORDS = frozenset({"and", "or", "not", "in", "is", "if", "else", "true", "false", "none",
                       "True", "False", "None"})


def _path_analysis(source: str) -> Analysis | None:
    match = _PATH.match(source)
    if match is None or match.group("root") in _KEYWORDS:
        return None
    root = match.group("root")
    first: str | None = None
    for i, segment in enumerate(_SEGMENT.finditer(match.group("rest"))):
        if segment.group("attr") in _KEYWORDS:
            return None  # let Jinja's parser say what it makes of it
        if i == 0 and segment.group("int") is None:
            first = segment.group("attr") or segment.group("sq") or segment.group("dq") or ""
    roots = frozenset({root}) - frozenset(_ENV.globals)
    refs = ((root, first),) if first is not None else ()
    secret = root == "secrets"
    return Analysis(refs, roots, frozenset({first}) if secret and first is not None
                    else frozenset(), secret and first is None)


@functools.lru_cache(maxsize=8192)
def analyze(source: str) -> Analysis:
    """References, roots and secrets of a template; `TemplateError` if it does not parse."""
    return _path_analysis(source) or _tree_analysis(source)


def _tree_analysis(source: str) -> Analysis:
    tree = parse(source)
    refs: list[tuple[str, str]] = []
    secrets: set[str] = set()
    literal: set[int] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node  # type: ignore[attr-defined]  # both node kinds have `.node`
        if not isinstance(target, nodes.Name):
            continue
        if isinstance(node, nodes.Getattr):
            name: str | None = node.attr
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):  # type: ignore[attr-defined]
            name = node.arg.value  # type: ignore[attr-defined]
        else:
            name = None
        if name is None:
            continue
        refs.append((target.name, name))
        if target.name == "secrets":
            secrets.add(name)
            literal.add(id(target))
    stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    loaded = [n for n in tree.find_all(nodes.Name) if n.ctx == "load"]
    computed = any(n.name == "secrets" and id(n) not in literal for n in loaded)
    roots = frozenset(n.name for n in loaded) - stored - frozenset(_ENV.globals)
    return Analysis(tuple(refs), roots, frozenset(secrets), computed)


def references(source: str) -> Iterator[tuple[str, str]]:
    """Yield `(root, name)` for every `root.name` / `root['name']` in a template.

    Roots are the top-level variables (`inputs`, `jobs`, `secrets`, ...); `name` is the first
    attribute under them. Used to check that named jobs and inputs exist.
    """
    yield from analyze(source).references


def root_names(source: str) -> set[str]:
    """The top-level variable names a template reads (loop variables and Jinja globals excluded)."""
    return set(analyze(source).roots)


def _native(value: Any) -> Any:
    if isinstance(value, ChainableUndefined):
        return None
    return value


def single_expression(value: str) -> str | None:
    """The expression of a value that is exactly one `{{ expression }}`, else None."""
    match = _SINGLE_EXPR.match(value)
    if match and "{{" not in match.group("expr") and "}}" not in match.group("expr"):
        return match.group("expr").strip()
    return None


# Compiling is most of a render's cost, and a for-each job renders the same `env`/`params`
# templates once per item: 10,000 items compiled them 10,000 times. Compiled templates are
# immutable and safe to share between threads.
@functools.lru_cache(maxsize=2048)
def _compiled_expression(source: str) -> Callable[..., Any]:
    return _ENV.compile_expression(source)


@functools.lru_cache(maxsize=2048)
def _compiled_template(source: str) -> Template:
    return _ENV.from_string(source)


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render a template value (recursing into lists and dicts) against `context`."""
    strict = context.strict if isinstance(context, RenderContext) else None
    token = _STRICT.set(strict or None)  # a render adds the containers it reaches to it
    try:
        return _render(value, context)
    finally:
        _STRICT.reset(token)


def _render(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: _render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context) for v in value]
    if not is_template(value):
        return value
    expression = single_expression(value)
    try:
        if expression is not None:
            return template_bounds.check_size(_native(_compiled_expression(expression)(**context)))
        return template_bounds.check_size(_compiled_template(value).render(**context))
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template does not parse: {exc.message}") from exc
    except MissingFieldError as exc:
        raise TemplateError(f"template {_shown(value)}: {exc}") from exc
    except Exception as exc:  # a sandbox violation or a filter error, reported as data
        raise TemplateError(f"template failed: {exc}") from exc


def _shown(source: str, limit: int = 120) -> str:
    text = " ".join(source.split())
    return repr(text if len(text) <= limit else text[:limit] + "...")


def to_env_value(value: Any) -> str:
    """How a rendered value becomes an environment variable: strings as they are, the rest JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, sort_keys=True, default=str)


__all__ = [
    "Analysis",
    "MissingFieldError",
    "RenderContext",
    "TemplateError",
    "analyze",
    "is_template",
    "parse",
    "references",
    "render",
    "root_names",
    "single_expression",
    "to_env_value",
]
