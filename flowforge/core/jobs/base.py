"""What every job has, whatever its kind: a name, edges, templates, retries, control flow.

A job kind is a subclass of `JobBase` with a `type` literal, its own fields and its own checks
(`check_kind`), plus the class attributes below that tell the rest of FlowForge how to treat it:
which fields hold templates, where secrets may appear, which targets it may run on and whether
Prefect retries it. Nothing outside the kind's module switches on its type string.

A field of another kind in a job (`url` on a script job) is refused by pydantic as an extra
field; validation then names the kind it belongs to (`owners`), which says more than "extra
inputs".
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

from flowforge.core import gate, templates
from flowforge.core.checks import Bad, CheckContext
from flowforge.core.names import ENV_NAME_RE, LIMIT_NAME_RE, RESERVED_ENV_PREFIXES
from flowforge.core.targets import Target, TargetBase
from flowforge.core.targets.local import LocalTarget

EdgeOn = Literal["success", "failure", "completion", "always", "true", "false"]
#: Defaults of a polling loop when `until` is set without them.
DEFAULT_INTERVAL = 5.0
DEFAULT_MAX_ATTEMPTS = 10


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


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


def _fix_on_key(value: Any) -> Any:
    # YAML 1.1 loaders read a bare `on:` key as the boolean True.
    if isinstance(value, dict) and True in value and "on" not in value:
        value = {("on" if k is True else k): v for k, v in value.items()}
    return value


def _check_env_name(key: str, field: str, bad: Bad) -> None:
    if not ENV_NAME_RE.match(key):
        bad(field, f"env name '{key}' is not a valid variable name")
    elif key.startswith(RESERVED_ENV_PREFIXES):
        bad(field, f"env name '{key}' is reserved")


class JobBase(_Model):
    # `json` (an http body) is held as `json_body`: a field named `json` would shadow
    # BaseModel.json; the document, the stored spec and the schema all say `json`.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    #: Kind-specific fields that hold templates, by attribute name (walked by validation).
    template_fields: ClassVar[tuple[str, ...]] = ()
    #: Document fields where `{{ secrets.x }}` may appear: only where a value goes to the job's
    #: own process or to the far end of a request, never where it would be published.
    secret_fields: ClassVar[frozenset[str]] = frozenset({"env"})
    #: Target kinds the job may run on (`local` is where every job runs by default).
    target_kinds: ClassVar[frozenset[str]] = frozenset({"local"})
    #: Whether the job's `retries` are Prefect task retries (a kind may retry by itself).
    prefect_retries: ClassVar[bool] = True
    #: Whether the job's work is done by its target's executor (scripts) rather than by its
    #: kind's runtime module alone; a run gets those executors ready before its first job.
    runs_on_target: ClassVar[bool] = False

    name: str
    type: str
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
    # Control flow. None defaults keep the spec JSON, hence the hash, of documents that do
    # not use them unchanged.
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

    # -- what the rest of FlowForge asks of a job ------------------------------------------------

    @classmethod
    def document_fields(cls) -> frozenset[str]:
        """The field names a document may use for this kind (aliases, not attribute names)."""
        return _fields_of(cls)

    @classmethod
    def label(cls, attr: str) -> str:
        """A field's name in the document (`json_body` is `json`)."""
        field = cls.model_fields.get(attr)
        return (field.alias if field is not None else None) or attr

    @property
    def target_kind(self) -> str:
        return "local" if self.target is None else self.target.kind

    @property
    def target_options(self) -> TargetBase:
        return LocalTarget() if self.target is None else self.target.chosen

    @property
    def display_kind(self) -> str:
        """A short word for the job in graphs: its kind, or its runtime for scripts."""
        return self.type

    def template_values(self) -> Iterator[tuple[str, Any]]:
        """`(document field, value)` of every field that may hold templates."""
        for attr, label in _template_labels(type(self)):
            yield label, self._template_value(attr)

    def _template_value(self, attr: str) -> Any:
        value = getattr(self, attr)
        return value.model_dump(exclude_none=True) if isinstance(value, BaseModel) else value

    def secret_names(self) -> set[str]:
        """Every secret this job's templates name: what it loads before it runs."""
        from flowforge.core.secretrefs import template_secret_refs

        names: set[str] = set()
        for label, value in self.template_values():
            if label in self.secret_fields:
                names |= template_secret_refs(value)
        return names

    # -- checks -----------------------------------------------------------------------------------

    def check(self, ctx: CheckContext, bad: Bad) -> None:
        """Every problem of this job on its own, through `bad(field, message)`."""
        self._check_needs(bad)
        for key in self.env:
            _check_env_name(key, f"env.{key}", bad)
        if self.target is not None:
            self._check_target(ctx, bad)
        self._check_control_flow(bad)
        self.check_kind(ctx, bad)

    def check_kind(self, ctx: CheckContext, bad: Bad) -> None:
        """The kind's own rules; overridden by kinds that have any."""

    def _check_needs(self, bad: Bad) -> None:
        for k, need in enumerate(self.needs):
            if need.job == self.name:
                bad(f"needs[{k}].job", "cannot need itself")
        counts = Counter(n.job for n in self.needs)
        for dup in sorted(n for n, c in counts.items() if c > 1):
            bad("needs", f"lists '{dup}' more than once")
        if self.run_if not in gate.ALL_RULES:
            bad("run_if", f"unknown run_if '{self.run_if}'; expected one of "
                + ", ".join(sorted(gate.ALL_RULES)))
        elif self.run_if not in gate.EDGE_MODES and any(n.on != "success" for n in self.needs):
            bad("run_if", f"run_if rule '{self.run_if}' works on plain needs; "
                "use run_if all/any with `on:` edges instead")

    def _check_target(self, ctx: CheckContext, bad: Bad) -> None:
        assert self.target is not None
        kind = self.target.kind
        if kind not in self.target_kinds:
            hosts = [k for k in _kind_types() if kind in _kind_class(k).target_kinds]
            bad(f"target.{kind}", f"a {kind} target runs {' or '.join(hosts)} jobs, "
                f"not '{self.type}' jobs")
            return
        self.target.chosen.check(ctx, lambda field, msg: bad(
            f"target.{kind}" + (f".{field}" if field else ""), msg))

    def _check_control_flow(self, bad: Bad) -> None:
        if self.for_each is not None:
            if isinstance(self.for_each, str) and not _single_expression(self.for_each):
                bad("for_each", "'for_each' must be a list or a single \"{{ expression }}\" "
                    "giving one, e.g. \"{{ jobs.list_files.output.files }}\"")
            elif not isinstance(self.for_each, str | list):
                bad("for_each", "'for_each' must be a list or a \"{{ expression }}\" giving one")
            if self.until is not None:
                bad("until", "'until' cannot be combined with 'for_each' (poll inside each "
                    "item's script, or in a job before the for-each)")
        else:
            _only_with(self, ("max_parallel", "allow_partial"), "a for_each job", bad)
        if self.until is None:
            _only_with(self, ("interval", "max_attempts"), "a job with 'until'", bad)
        elif not _single_expression(self.until):
            bad("until", "'until' must be a single \"{{ expression }}\", e.g. "
                "\"{{ output.status == 'done' }}\"")
        if self.backoff is not None or self.jitter is not None:
            field = "backoff" if self.backoff is not None else "jitter"
            if not self.retries:
                bad(field, "'backoff' and 'jitter' shape retries; set 'retries' too")
            if not self.prefect_retries:
                bad(field, f"{self.type} jobs retry inside their executor with exponential "
                    "backoff already")
        for k, name in enumerate(self.concurrency or []):
            if not isinstance(name, str) or not LIMIT_NAME_RE.match(name):
                bad(f"concurrency[{k}]", f"'{name}' is not a concurrency limit name (lowercase "
                    "letters, digits, '_', '.', '-')")
        counts = Counter(self.concurrency or [])
        for dup in sorted(n for n, c in counts.items() if c > 1):
            bad("concurrency", f"lists '{dup}' more than once")


@functools.cache
def _fields_of(cls: type[JobBase]) -> frozenset[str]:
    return frozenset(f.alias or name for name, f in cls.model_fields.items())


@functools.cache
def _template_labels(cls: type[JobBase]) -> tuple[tuple[str, str], ...]:
    return tuple((attr, cls.label(attr))
                 for attr in ("env", "params", *cls.template_fields, "for_each", "until"))


def _single_expression(value: str) -> bool:
    return templates.is_template(value) and templates.single_expression(value) is not None


def _only_with(job: JobBase, attrs: tuple[str, ...], owner: str, bad: Bad) -> None:
    for attr in attrs:
        if getattr(job, attr) is not None:
            bad(attr, f"'{attr}' applies only to {owner}")


def _kinds() -> list[type[JobBase]]:
    found: list[type[JobBase]] = []
    todo = list(JobBase.__subclasses__())
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def _kind_types() -> list[str]:
    return [t for cls in _kinds() if isinstance(t := cls.model_fields["type"].default, str)]


def _kind_class(kind: str) -> type[JobBase]:
    return next(c for c in _kinds() if c.model_fields["type"].default == kind)


def owners(key: str) -> list[str]:
    """The kinds (by type) that have a document field `key`, for the foreign-field message."""
    common = set(JobBase.model_fields) | {"type"}
    if key in common:
        return []
    owners = []
    for cls in _kinds():
        kind = cls.model_fields["type"].default
        if isinstance(kind, str) and key in cls.document_fields() and kind not in owners:
            owners.append(kind)
    return owners


def extra_roots(field: str) -> set[str]:
    """Template roots a field may read beyond the common ones: `until` sees the job's own
    output and the attempt number."""
    return {"output", "attempt"} if field.endswith(".until") else set()


__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_MAX_ATTEMPTS",
    "Bad",
    "CheckContext",
    "JobBase",
    "Need",
    "extra_roots",
    "owners",
]
