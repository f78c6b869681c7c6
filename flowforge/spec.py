"""The workflow document: pydantic models, parsing (JSON or YAML) and whole-graph validation.

This is the contract between the API, the compiler and the runtime. `load_workflow()` is the one
entry point: it parses, checks the shape with pydantic, then checks the graph (cycles, unknown
needs, template references, run-if rules) and reports *every* problem at once in a `SpecError`,
each naming the field and, where there is one, the job at fault.
"""

from __future__ import annotations

import graphlib
import hashlib
import json
import keyword
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flowforge import controlflow, jobkinds
from flowforge.document import parse_document
from flowforge.errors import SpecError
from flowforge.inputs import input_type_problem, resolve_inputs
from flowforge.jobkinds import HttpAuth
from flowforge.runtime import gate, templates
from flowforge.triggers import Trigger

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
JOB_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$")
RESERVED_INPUTS = {"flowforge_trigger", "flowforge_repair"}
TEMPLATE_ROOTS = {"inputs", "jobs", "run", "item", "trigger", "params", "env", "secrets"}

InputType = Literal["string", "integer", "number", "boolean", "enum", "json"]
Runtime = Literal["bash", "python", "node"]
EdgeOn = Literal["success", "failure", "completion", "always", "true", "false"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InputSpec(_Model):
    type: InputType = "string"
    description: str | None = None
    enum: list[Any] | None = None
    default: Any = None
    required: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> InputSpec:
        if self.type == "enum" and not self.enum:
            raise ValueError("type 'enum' needs a non-empty 'enum' list")
        if self.default is not None:
            problem = input_type_problem(self, self.default)
            if problem:
                raise ValueError(f"default {problem}")
        return self

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None


class Need(_Model):
    job: str
    on: EdgeOn = "success"

    @field_validator("on", mode="before")
    @classmethod
    def _bool_on(cls, value: Any) -> Any:
        # `on: true` in YAML is a boolean; the document means the condition edge.
        if isinstance(value, bool):
            return "true" if value else "false"
        return value


class LocalTarget(_Model):
    pass


MEMORY_RE = re.compile(r"^[1-9][0-9]*[bkmg]?$", re.IGNORECASE)


class ContainerTarget(_Model):
    """A fresh Docker container per job (flowforge/runtime/container.py runs it).

    Every default hardens: no network, read-only root, a non-root user, memory and pids
    limits. `network: host` must also be allowed by the workflow (`settings.allow_host_network`),
    so one job cannot quietly give itself the network.
    """

    image: str | None = None  # None: the runner image, flowforge-runner:<version>
    memory: str = "512m"
    cpus: Annotated[float | None, Field(gt=0, le=256)] = None
    pids_limit: Annotated[int, Field(ge=8, le=1_000_000)] = 256
    network: Literal["none", "host"] = "none"
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None  # None: the job directory
    user: str = "65534:65534"
    read_only: bool = True
    timeout: Annotated[float | None, Field(gt=0, le=7 * 86400)] = None

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not MEMORY_RE.match(value):
            raise ValueError(f"memory {value!r} must be a size like 128m, 2g or 1048576")
        if memory_bytes(value) < 6 * 1024 * 1024:
            raise ValueError(f"memory {value!r} is below Docker's minimum of 6m")
        return value.lower()

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"workdir {value!r} must be an absolute path")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$", value):
            raise ValueError(f"user {value!r} must be NAME, UID or UID:GID")
        return value


def memory_bytes(size: str) -> int:
    """Docker's size notation (`128m`) in bytes."""
    units = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    unit = size[-1].lower()
    return int(size[:-1]) * units[unit] if unit in units else int(size)


SERVER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class SshTarget(_Model):
    """`{ssh: {servers: [web1, web2]}}` or `{ssh: {tags: [web]}}`: run on every server listed.

    Tags are resolved when the job starts, from the server records in Prefect, so a server
    added with the tag later is included without re-deploying the workflow.
    """

    servers: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    allow_partial: bool = False

    @model_validator(mode="after")
    def _check(self) -> SshTarget:
        if not self.servers and not self.tags:
            raise ValueError("an ssh target needs 'servers' or 'tags' (a non-empty list)")
        for field, names in (("servers", self.servers), ("tags", self.tags)):
            bad = [n for n in names if not SERVER_NAME_RE.match(n)]
            if bad:
                raise ValueError(f"{field}: '{bad[0]}' is not a valid name (lowercase letters, "
                                 "digits and '-', at most 63 characters)")
            if len(set(names)) != len(names):
                raise ValueError(f"{field}: lists a name more than once")
        return self


class Target(_Model):
    local: LocalTarget | None = None
    container: ContainerTarget | None = None
    ssh: SshTarget | None = None


class Job(_Model):
    # `json` (an http body) is held as `json_body`: a field named `json` would shadow
    # BaseModel.json; the document, the stored spec and the schema all say `json`.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    name: str
    type: Literal["script", "message", "http", "workflow", "condition"] = "script"
    description: str | None = None
    needs: list[Need] = Field(default_factory=list)
    run_if: str = "all"
    env: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    target: Target | None = None
    retries: Annotated[int, Field(ge=0, le=100)] = 0
    retry_delay: Annotated[float, Field(ge=0, le=86400)] = 0
    timeout: Annotated[float | None, Field(gt=0, le=7 * 86400)] = None
    continue_on_error: bool = False
    # script
    runtime: Runtime | None = None
    script: str | None = None
    # message
    to: str | list[str] | None = None
    title: str | None = None
    body: str | None = None
    # http (flowforge/jobkinds.py checks these; the body is `body` above or `json`)
    method: str | None = None
    url: str | None = None
    headers: dict[str, Any] | None = None
    query: dict[str, Any] | None = None
    json_body: Any = Field(default=None, alias="json")
    auth: HttpAuth | None = None
    expect_status: list[int | str] | int | str | None = None
    # workflow: run another workflow as a sub-run
    workflow: str | None = None
    inputs: dict[str, Any] | None = None
    wait: bool | None = None
    # condition: `if` is a Python keyword, so the field is `if_expr`, aliased
    if_expr: str | None = Field(default=None, alias="if")
    # control flow (flowforge/controlflow.py checks these); None defaults keep the spec
    # JSON, hence the hash, of documents that do not use them unchanged
    for_each: Any = None
    max_parallel: Annotated[int | None, Field(ge=1, le=1000)] = None
    allow_partial: bool | None = None
    until: str | None = None
    interval: Annotated[float | None, Field(ge=0, le=86400)] = None
    max_attempts: Annotated[int | None, Field(ge=1, le=100000)] = None
    backoff: Literal["constant", "exponential"] | None = None
    jitter: Annotated[float | None, Field(ge=0, le=10)] = None
    concurrency: list[str] | None = None

    @field_validator("needs", mode="before")
    @classmethod
    def _plain_needs(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [{"job": v} if isinstance(v, str) else _fix_on_key(v) for v in value]
        return value

    @field_validator("run_if", mode="before")
    @classmethod
    def _lower_rule(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


class Settings(_Model):
    max_parallel_jobs: Annotated[int, Field(ge=1, le=1000)] = 10
    timeout: Annotated[float | None, Field(gt=0, le=30 * 86400)] = None
    fail_fast: bool = False
    execution: Literal["dag", "sequential"] | None = None
    work_pool: str | None = None
    # Whether container jobs may use `network: host` (the host's network, incl. 127.0.0.1).
    allow_host_network: bool = False
    max_concurrent_runs: Annotated[int | None, Field(ge=1, le=10000)] = None
    on_limit: Literal["queue", "cancel_new"] | None = None


class Workflow(_Model):
    name: str
    description: str | None = None
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    settings: Settings = Field(default_factory=Settings)
    jobs: list[Job]
    outputs: dict[str, Any] = Field(default_factory=dict)
    triggers: list[Trigger] = Field(default_factory=list)

    def job(self, name: str) -> Job:
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)

    @property
    def is_sequential(self) -> bool:
        if self.settings.execution is not None:
            return self.settings.execution == "sequential"
        return not any(job.needs for job in self.jobs)


def _fix_on_key(value: Any) -> Any:
    # YAML 1.1 loaders read a bare `on:` key as the boolean True.
    if isinstance(value, dict) and True in value and "on" not in value:
        value = {("on" if k is True else k): v for k, v in value.items()}
    return value


def _loc(loc: tuple[Any, ...], data: Any) -> tuple[str, str | None]:
    """Render a pydantic error location as `jobs[2].needs[0].job`, and find the job's name."""
    parts: list[str] = []
    job = None
    node = data  # the document value at the location walked so far
    for i, part in enumerate(loc):
        if isinstance(part, int):
            parts.append(f"[{part}]")
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if i == 1 and loc[0] == "jobs" and isinstance(node, dict):
                job = node.get("name")
        elif (isinstance(node, dict) and part not in node and node.get("type") == part
              and i + 1 < len(loc)):
            continue  # a discriminated union's tag (`triggers[0].schedule.cron`), not a field
        else:
            parts.append(("." if parts else "") + str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return "".join(parts), job if isinstance(job, str) else None


def _problem(field: str, message: str, job: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"field": field, "message": message}
    if job is not None:
        out["job"] = job
    return out


def load_workflow(document: Any) -> Workflow:
    """Parse and validate a workflow document (text, or already-parsed data)."""
    data = parse_document(document) if isinstance(document, str | bytes) else document
    if not isinstance(data, dict):
        raise SpecError([_problem("", "a workflow document must be a mapping")])
    try:
        workflow = Workflow.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            field, job = _loc(loc, data)
            msg = err["msg"].removeprefix("Value error, ")
            if job:
                msg = f"job '{job}': {field.split('.', 1)[-1]}: {msg}"
            else:
                msg = f"{field}: {msg}" if field else msg
            problems.append(_problem(field, msg, job))
        raise SpecError(problems) from exc
    problems = check_graph(workflow)
    if problems:
        raise SpecError(problems)
    return workflow


def check_graph(wf: Workflow) -> list[dict[str, Any]]:
    """Every whole-document problem pydantic cannot see, in document order."""
    problems: list[dict[str, Any]] = []
    if not NAME_RE.match(wf.name):
        problems.append(_problem("name", f"workflow name '{wf.name}' must be a lowercase slug "
                                 "(a-z, 0-9, '-', '_'; at most 63 characters)"))
    for name in wf.inputs:
        if not name.isidentifier() or keyword.iskeyword(name) or name in RESERVED_INPUTS:
            problems.append(_problem(f"inputs.{name}", f"input name '{name}' must be a Python "
                                     "identifier and not reserved"))
    if not wf.jobs:
        problems.append(_problem("jobs", "a workflow needs at least one job"))
    seen: set[str] = set()
    for i, job in enumerate(wf.jobs):
        if job.name in seen:
            problems.append(_problem(f"jobs[{i}].name", f"duplicate job name '{job.name}'",
                                     job.name))
        seen.add(job.name)
        if not JOB_NAME_RE.match(job.name):
            problems.append(_problem(f"jobs[{i}].name", f"job name '{job.name}' must start with "
                                     "a letter or '_' and hold only letters, digits, '_', '-'",
                                     job.name))
        problems.extend(_check_job(wf, i, job, seen_all={j.name for j in wf.jobs}))
    if problems:
        return problems
    try:
        order = topological_order(wf)
    except graphlib.CycleError as exc:
        cycle = list(exc.args[1])
        return [_problem("jobs", "dependency cycle: " + " -> ".join(cycle), cycle[0])]
    problems.extend(_check_templates(wf, order))
    return problems


def _check_job(wf: Workflow, i: int, job: Job, seen_all: set[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    at = f"jobs[{i}]"

    def bad(field: str, message: str) -> None:
        out.append(_problem(f"{at}.{field}" if field else at, f"job '{job.name}': {message}",
                            job.name))

    for k, need in enumerate(job.needs):
        if need.job not in seen_all:
            bad(f"needs[{k}].job", f"needs unknown job '{need.job}'")
        elif need.job == job.name:
            bad(f"needs[{k}].job", "cannot need itself")
    names = [n.job for n in job.needs]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        bad("needs", f"lists '{dup}' more than once")
    if job.run_if not in gate.ALL_RULES:
        bad("run_if", f"unknown run_if '{job.run_if}'; expected one of "
            + ", ".join(sorted(gate.ALL_RULES)))
    elif job.run_if not in gate.EDGE_MODES and any(n.on != "success" for n in job.needs):
        bad("run_if", f"run_if rule '{job.run_if}' works on plain needs; "
            "use run_if all/any with `on:` edges instead")
    if job.type == "script":
        if job.runtime is None:
            bad("runtime", "a script job needs 'runtime' (bash, python or node)")
        if not job.script:
            bad("script", "a script job needs a non-empty 'script'")
    elif job.type == "message":
        if not job.to:
            bad("to", "a message job needs 'to' (one or more apprise URLs)")
        if job.body is None:
            bad("body", "a message job needs a 'body'")
    elif job.type not in ("http", "workflow", "condition"):
        bad("type", f"job type '{job.type}' is not supported in this release "
            "(supported: script, message, http, workflow, condition)")
    jobkinds.check_kind(wf.name, job, bad)
    controlflow.check_job(job, bad)
    container = job.target.container if job.target is not None else None
    if container is not None:
        if job.type != "script":
            bad("target.container", f"a container target runs script jobs, not '{job.type}' jobs")
        if container.network == "host" and not wf.settings.allow_host_network:
            bad("target.container.network", "network 'host' needs the workflow setting "
                "allow_host_network: true")
        for key in container.env:
            _check_env_name(key, f"target.container.env.{key}", bad)
    if job.target is not None and job.target.ssh is not None and job.type != "script":
        bad("target.ssh", f"only script jobs run on ssh servers, not {job.type} jobs")
    if job.target is not None:
        chosen = [k for k in ("local", "container", "ssh") if getattr(job.target, k) is not None]
        if len(chosen) > 1:
            bad("target", f"a target is one of local, container or ssh, not {' and '.join(chosen)}")
    for key in job.env:
        _check_env_name(key, f"env.{key}", bad)
    return out


def _check_env_name(key: str, field: str, bad: Callable[[str, str], None]) -> None:
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
        bad(field, f"env name '{key}' is not a valid variable name")
    elif key.startswith(("FLOWFORGE_", "PREFECT_")):
        bad(field, f"env name '{key}' is reserved")


def _template_fields(wf: Workflow) -> list[tuple[str, str | None, str]]:
    """`(field, job, template)` for every template string in the document."""
    found: list[tuple[str, str | None, str]] = []

    def walk(value: Any, field: str, job: str | None) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{field}.{k}", job)
        elif isinstance(value, list):
            for k, v in enumerate(value):
                walk(v, f"{field}[{k}]", job)
        elif templates.is_template(value):
            found.append((field, job, value))

    for i, job in enumerate(wf.jobs):
        for attr in ("env", "params", "to", "title", "body", *jobkinds.TEMPLATE_ATTRS,
                     *controlflow.TEMPLATE_ATTRS):
            walk(jobkinds.template_value(job, attr),
                 f"jobs[{i}].{controlflow.LABELS.get(attr, attr)}", job.name)
    walk(wf.outputs, "outputs", None)
    return found


def _check_templates(wf: Workflow, order: list[str]) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = []
    ancestors = ancestor_map(wf)
    jobs = {j.name for j in wf.jobs}
    kinds = {j.name: j.type for j in wf.jobs}
    for field, job, source in _template_fields(wf):
        prefix = f"job '{job}': " if job else ""
        try:
            refs = list(templates.references(source))
            roots = templates.root_names(source)
            secret_problem = jobkinds.secret_problem(field, kinds.get(job or ""), source)
        except templates.TemplateError as exc:
            problems.append(_problem(field, f"{prefix}{field.split('.', 1)[-1]}: {exc}", job))
            continue
        if secret_problem:
            problems.append(_problem(field, f"{prefix}{secret_problem}", job))
        known = TEMPLATE_ROOTS | controlflow.extra_roots(field)
        for root in sorted(roots - known):
            problems.append(_problem(field, f"{prefix}template names unknown variable '{root}' "
                                     f"(known: {', '.join(sorted(known))})", job))
        if "item" in roots and job is not None and wf.job(job).for_each is None:
            problems.append(_problem(field, f"{prefix}template reads 'item' but '{job}' has "
                                     "no for_each", job))
        for root, name in refs:
            if root == "jobs" and name not in jobs:
                problems.append(_problem(field, f"{prefix}template names unknown job '{name}'",
                                         job))
            elif root == "jobs" and job is not None and name not in ancestors[job]:
                problems.append(_problem(field, f"{prefix}template reads jobs.{name} but "
                                         f"'{job}' does not depend on '{name}' (add it to needs)",
                                         job))
            elif root == "inputs" and name not in wf.inputs:
                problems.append(_problem(field, f"{prefix}template names unknown input '{name}'",
                                         job))
    return problems


def effective_needs(wf: Workflow) -> dict[str, list[Need]]:
    """Each job's incoming edges, with the sequential fallback applied."""
    if wf.is_sequential and not any(job.needs for job in wf.jobs):
        out: dict[str, list[Need]] = {}
        for prev, job in zip([None, *wf.jobs[:-1]], wf.jobs, strict=True):
            out[job.name] = [Need(job=prev.name)] if prev is not None else []
        return out
    return {job.name: list(job.needs) for job in wf.jobs}


def topological_order(wf: Workflow) -> list[str]:
    """Jobs in dependency order; ties broken by document order so output is byte-stable."""
    needs = effective_needs(wf)
    position = {job.name: i for i, job in enumerate(wf.jobs)}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for job in wf.jobs:
        sorter.add(job.name, *[n.job for n in needs[job.name]])
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order.extend(ready)
        sorter.done(*ready)
    return order


def ancestor_map(wf: Workflow) -> dict[str, set[str]]:
    needs = effective_needs(wf)
    memo: dict[str, set[str]] = {}
    for name in topological_order(wf):
        acc: set[str] = set()
        for need in needs[name]:
            acc.add(need.job)
            acc |= memo[need.job]
        memo[name] = acc
    return memo


def spec_json(wf: Workflow) -> str:
    """Canonical JSON of a workflow: what is hashed, stored and written beside the flow."""
    return json.dumps(wf.model_dump(mode="json", exclude_none=True), sort_keys=True, indent=2) + "\n"


def spec_hash(wf: Workflow) -> str:
    return hashlib.sha256(spec_json(wf).encode()).hexdigest()[:16]


__all__ = [
    "ContainerTarget",
    "InputSpec",
    "Job",
    "Need",
    "Settings",
    "Target",
    "Workflow",
    "ancestor_map",
    "check_graph",
    "effective_needs",
    "load_workflow",
    "memory_bytes",
    "parse_document",
    "resolve_inputs",
    "spec_hash",
    "spec_json",
    "topological_order",
]
