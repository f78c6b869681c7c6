"""Jinja templates over run data, in a sandbox.

Templates are data, never code: the sandbox stops attribute escapes (`__class__`, `mro`) and
there is no import. A value that is exactly one `{{ expression }}` keeps its native type (a
dict stays a dict), so `params: {rows: "{{ jobs.a.output.rows }}"}` hands the script a number;
anything else renders to a string. The same module parses templates at validation time to find
the jobs and inputs they name, so a typo is a 422 before anything is stored.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# `{{- x -}}` / `{{+ x +}}` are whitespace control, not part of the expression
_SINGLE_EXPR = re.compile(r"^\s*\{\{[-+]?(?P<expr>.*?)[-+]?\}\}\s*$", re.DOTALL)


def _tojson(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class _Sandbox(ImmutableSandboxedEnvironment):
    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # Jinja's sandbox answers `''.__class__` with an Undefined, which ChainableUndefined
        # then renders as empty: the escape is stopped but silently. Make it an error instead.
        raise SecurityError(f"access to attribute {attribute!r} of "
                            f"{type(obj).__name__!r} object is unsafe")


def _environment() -> ImmutableSandboxedEnvironment:
    # ChainableUndefined: `jobs.skipped_job.output.rows` is empty, not an error, at run time;
    # references to unknown jobs or inputs are caught earlier, by `references()`.
    env = _Sandbox(undefined=ChainableUndefined, autoescape=False)
    env.filters["tojson"] = _tojson
    env.filters["fromjson"] = json.loads
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


def references(source: str) -> Iterator[tuple[str, str]]:
    """Yield `(root, name)` for every `root.name` / `root['name']` in a template.

    Roots are the top-level variables (`inputs`, `jobs`, `secrets`, ...); `name` is the first
    attribute under them. Used to check that named jobs and inputs exist.
    """
    tree = parse(source)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
            yield node.node.name, node.attr
        elif (isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name)
              and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str)):
            yield node.node.name, node.arg.value


def root_names(source: str) -> set[str]:
    """The top-level variable names a template reads (loop variables and Jinja globals excluded)."""
    tree = parse(source)
    stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    # Jinja's own globals (`range`, `dict`, `namespace`, ...) are not run data
    return {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"} - stored - set(
        _ENV.globals)


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


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render a template value (recursing into lists and dicts) against `context`."""
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if not is_template(value):
        return value
    expression = single_expression(value)
    try:
        if expression is not None:
            return _native(_compiled_expression(expression)(**context))
        return _compiled_template(value).render(**context)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template does not parse: {exc.message}") from exc
    except Exception as exc:  # a sandbox violation or a filter error, reported as data
        raise TemplateError(f"template failed: {exc}") from exc


def to_env_value(value: Any) -> str:
    """How a rendered value becomes an environment variable: strings as they are, the rest JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, sort_keys=True, default=str)


__all__ = [
    "TemplateError",
    "is_template",
    "parse",
    "references",
    "render",
    "root_names",
    "single_expression",
    "to_env_value",
]
