"""Whole-document validation: `load_workflow()` parses, checks the shape, then the graph.

Every problem is reported at once in a `SpecError`, each naming the field and, where there is
one, the job at fault. Each job checks itself (its kind's `check`); what needs the whole
document is here: names, duplicates, unknown needs, cycles, and what templates may read.
Everything is linear in the size of the document except the ancestry test, which is a bit-set
operation per template reference.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from flowforge.core import templates
from flowforge.core.checks import CheckContext
from flowforge.core.document import parse_document
from flowforge.core.errors import SpecError
from flowforge.core.jobs import JOB_KINDS, JobBase, kind_of
from flowforge.core.jobs.base import extra_roots, owners
from flowforge.core.names import (
    JOB_NAME_RE,
    NAMESPACE_RE,
    RESERVED_NAMESPACES,
    SECRET_NAME_RE,
    WORKFLOW_NAME_RE,
    is_input_name,
    reserved_name_problem,
)
from flowforge.core.secretrefs import secret_refs
from flowforge.core.workflow import Ancestry, Workflow, effective_needs, topological_order

TEMPLATE_ROOTS = frozenset({"inputs", "jobs", "run", "item", "trigger", "params", "env", "secrets"})


def _problem(field: str, message: str, job: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"field": field, "message": message}
    if job is not None:
        out["job"] = job
    return out


def _loc(loc: tuple[Any, ...], data: Any) -> tuple[str, str | None]:
    """Render a pydantic error location as `jobs[2].needs[0].job`, and find the job's name.

    Discriminated unions put their tag in the location (`jobs.0.http.url`,
    `triggers.0.schedule.cron`); it is not a field of the document, so it is left out.
    """
    parts: list[str] = []
    job = None
    node = data  # the document value at the location walked so far
    tag_next = False
    for i, part in enumerate(loc):
        if isinstance(part, int):
            parts.append(f"[{part}]")
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if i == 1 and loc[0] == "jobs" and isinstance(node, dict):
                job = node.get("name")
            tag_next = i == 1 and loc[0] in ("jobs", "triggers") and isinstance(node, dict)
            continue
        if tag_next:
            tag_next = False
            expected = kind_of(node) if loc[0] == "jobs" else node.get("type")
            if part == expected and i + 1 < len(loc):
                continue
        parts.append(("." if parts else "") + str(part))
        node = node.get(part) if isinstance(node, dict) else None
    return "".join(parts), job if isinstance(job, str) else None


def _shape_problems(exc: ValidationError, data: Any) -> list[dict[str, Any]]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        field, job = _loc(loc, data)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and job is not None and len(loc) == 4:
            found = owners(str(loc[-1]))
            if found:
                kind = kind_of(_at(data, loc[:2]))
                msg = f"'{loc[-1]}' belongs to {' or '.join(found)} jobs, not to a {kind} job"
        if err["type"] == "job_type":
            kind = kind_of(_at(data, loc))
            field, msg = f"{field}.type", (f"job type '{kind}' is not supported (supported: "
                                           f"{', '.join(JOB_KINDS)})")
        where = field.split(".", 1)[-1] if job else field
        prefix = f"job '{job}': " if job else ""
        problems.append(_problem(field, f"{prefix}{where}: {msg}" if where else msg, job))
    return problems


def _at(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def load_workflow(document: Any) -> Workflow:
    """Parse and validate a workflow document (text, or already-parsed data)."""
    data = parse_document(document) if isinstance(document, str | bytes) else document
    if not isinstance(data, dict):
        raise SpecError([_problem("", "a workflow document must be a mapping")])
    try:
        workflow = Workflow.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_shape_problems(exc, data)) from exc
    problems = check_graph(workflow)
    if problems:
        raise SpecError(problems)
    return workflow


def check_graph(wf: Workflow) -> list[dict[str, Any]]:
    """Every whole-document problem pydantic cannot see, in document order."""
    problems: list[dict[str, Any]] = []
    if not WORKFLOW_NAME_RE.match(wf.name):
        problems.append(_problem("name", f"workflow name '{wf.name}' must be a lowercase slug "
                                 "(a-z, 0-9, '-', '_'; at most 63 characters)"))
    if wf.namespace is not None and (not NAMESPACE_RE.match(wf.namespace)
                                     or wf.namespace in RESERVED_NAMESPACES):
        problems.append(_problem("namespace", f"namespace '{wf.namespace[:80]}' must be a "
                                 "lowercase slug (letters, digits, single '-'; at most 41 "
                                 "characters), not starting with 'flowforge-' and not one "
                                 "of " + ", ".join(sorted(RESERVED_NAMESPACES))))
    for name in wf.inputs:
        if not is_input_name(name):
            problems.append(_problem(f"inputs.{name}", f"input name '{name}' must be a Python "
                                     "identifier and not reserved"))
    if not wf.jobs:
        problems.append(_problem("jobs", "a workflow needs at least one job"))
    names = {job.name for job in wf.jobs}
    ctx = CheckContext(workflow=wf.name, settings=wf.settings)
    seen: set[str] = set()
    for i, job in enumerate(wf.jobs):
        at = f"jobs[{i}]"

        def bad(field: str, message: str, job: JobBase = job, at: str = at) -> None:
            problems.append(_problem(f"{at}.{field}" if field else at,
                                     f"job '{job.name}': {message}", job.name))

        if job.name in seen:
            problems.append(_problem(f"{at}.name", f"duplicate job name '{job.name}'", job.name))
        seen.add(job.name)
        if not JOB_NAME_RE.match(job.name):
            problems.append(_problem(f"{at}.name", f"job name '{job.name}' must start with a "
                                     "letter or '_' and hold only letters, digits, '_', '-'",
                                     job.name))
        for k, need in enumerate(job.needs):
            if need.job not in names:
                bad(f"needs[{k}].job", f"needs unknown job '{need.job}'")
        job.check(ctx, bad)
    if problems:
        return problems
    needs = effective_needs(wf)
    try:
        order = topological_order(wf, needs)
    except graphlib.CycleError as exc:
        cycle = list(exc.args[1])
        return [_problem("jobs", "dependency cycle: " + " -> ".join(cycle), cycle[0])]
    problems.extend(_check_templates(wf, needs, order))
    return problems


def _template_fields(wf: Workflow) -> Iterator[tuple[str, JobBase | None, str]]:
    """`(field, job, template)` for every template string in the document."""

    def walk(value: Any, field: str, job: JobBase | None) -> Iterator[tuple[str, JobBase | None, str]]:
        if isinstance(value, dict):
            for k, v in value.items():
                yield from walk(v, f"{field}.{k}", job)
        elif isinstance(value, list):
            for k, v in enumerate(value):
                yield from walk(v, f"{field}[{k}]", job)
        elif templates.is_template(value):
            yield field, job, value

    for i, job in enumerate(wf.jobs):
        for label, value in job.template_values():
            yield from walk(value, f"jobs[{i}].{label}", job)
    yield from walk(wf.outputs, "outputs", None)


def secret_problem(field: str, job: JobBase | None, source: str) -> str | None:
    """Why a template may not read the secrets it names here, or None if it may (or reads none).

    `field` is the document path (`jobs[2].headers.Authorization`); `job` None means a
    workflow-level field such as `outputs`.
    """
    names = secret_refs(source)  # TemplateError for computed names
    if not names:
        return None
    attr = field.split(".", 1)[1].split(".", 1)[0].split("[", 1)[0] if job else field
    allowed = job.secret_fields if job is not None else frozenset()
    if attr not in allowed:
        where = ", ".join(sorted(allowed)) or "job fields"
        return f"secrets cannot be used in '{attr}' (only in {where}), so they are never published"
    for name in sorted(names):
        if not SECRET_NAME_RE.match(name):
            return f"'{name}' is not a secret name (lowercase letters, digits and single '-')"
        reserved = reserved_name_problem(name)
        if reserved:
            return f"secret '{name}' cannot be read by a job: {reserved}"
    return None


def _check_templates(wf: Workflow, needs: dict[str, Any], order: list[str]) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = []
    ancestry: Ancestry | None = None  # built on the first reference to a job
    jobs = wf.jobs_by_name()
    for field, job, source in _template_fields(wf):
        prefix = f"job '{job.name}': " if job else ""
        name = job.name if job else None
        try:
            found = templates.analyze(source)  # one parse answers everything below
            secret = secret_problem(field, job, source)
        except templates.TemplateError as exc:
            problems.append(_problem(field, f"{prefix}{field.split('.', 1)[-1]}: {exc}", name))
            continue
        if secret:
            problems.append(_problem(field, f"{prefix}{secret}", name))
        known = TEMPLATE_ROOTS | extra_roots(field)
        for root in sorted(found.roots - known):
            problems.append(_problem(field, f"{prefix}template names unknown variable '{root}' "
                                     f"(known: {', '.join(sorted(known))})", name))
        if "item" in found.roots and job is not None and job.for_each is None:
            problems.append(_problem(field, f"{prefix}template reads 'item' but '{job.name}' "
                                     "has no for_each", name))
        for root, ref in found.references:
            if root == "jobs" and ref not in jobs:
                problems.append(_problem(field, f"{prefix}template names unknown job '{ref}'",
                                         name))
            elif root == "jobs" and job is not None:
                ancestry = ancestry or Ancestry(wf, needs, order)
                if not ancestry.depends_on(job.name, ref):
                    problems.append(_problem(
                        field, f"{prefix}template reads jobs.{ref} but '{job.name}' does not "
                        f"depend on '{ref}' (add it to needs)", name))
            elif root == "inputs" and ref not in wf.inputs:
                problems.append(_problem(field, f"{prefix}template names unknown input '{ref}'",
                                         name))
    return problems


__all__ = ["TEMPLATE_ROOTS", "check_graph", "load_workflow", "secret_problem"]
