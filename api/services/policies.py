"""Namespaces' admission policies: what an admin allows, checked before a document is stored.

What weakens a job's isolation is granted here, never by the document itself: a workflow's
`settings.allow_host_network` used to be all a container job needed for the host's network,
so one author could grant it to themselves. Now a namespace's policy must allow it too, and
likewise a root user, a writable root, limits past the admin's maximum, images outside a
list, targets outside a list. A namespace with `isolation: container` runs script jobs only in
containers. Every refusal is a 422 naming the job, the field and the rule.
"""

from __future__ import annotations

import json
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from api.schemas.access import NamespacePublic, NamespacePut, Policy
from api.tables import NamespaceRow, utcnow
from flowforge.core.errors import InvalidRequestError, SpecError
from flowforge.core.images import runner_image_name
from flowforge.core.names import NAMESPACE_RE, RESERVED_NAMESPACES
from flowforge.core.targets import ContainerTarget
from flowforge.core.targets.container import memory_bytes
from flowforge.core.workflow import Workflow

_ROOT_USERS = ("root", "0")


async def settings_of(session: AsyncSession, namespace: str) -> NamespacePublic:
    row = await session.get(NamespaceRow, namespace)
    if row is None:
        return NamespacePublic(name=namespace, isolation="none", policy=Policy())
    return NamespacePublic(name=row.name, isolation=row.isolation,
                           policy=Policy.model_validate_json(row.policy),
                           updated_at=row.updated_at)


async def put(session: AsyncSession, namespace: str, body: NamespacePut) -> NamespacePublic:
    if not NAMESPACE_RE.match(namespace) or namespace in RESERVED_NAMESPACES:
        raise InvalidRequestError("name", f"'{namespace[:80]}' is not a namespace name one may "
                                  "set (a lowercase slug, not starting with 'flowforge-', "
                                  "not " + ", ".join(
                                      sorted(RESERVED_NAMESPACES)) + ")")
    if body.policy.max_memory is not None:
        try:
            ContainerTarget(memory=body.policy.max_memory)
        except ValueError as exc:
            raise InvalidRequestError("policy.max_memory", str(exc).splitlines()[-1]) from exc
    row = await session.get(NamespaceRow, namespace) or NamespaceRow(name=namespace)
    row.isolation = body.isolation
    row.policy = body.policy.model_dump_json()
    row.updated_at = utcnow()
    session.add(row)
    await session.commit()
    return await settings_of(session, namespace)


def problems(wf: Workflow, ns: NamespacePublic) -> list[dict[str, Any]]:
    """What of `wf` the namespace's settings refuse, each naming the job, field and rule."""
    policy = ns.policy
    out: list[dict[str, Any]] = []

    def bad(i: int, job: str, field: str, message: str) -> None:
        out.append({"field": f"jobs[{i}].{field}", "job": job,
                    "message": f"job '{job}': {message} (policy of namespace '{ns.name}')"})

    if policy.max_parallel_jobs is not None and wf.settings.max_parallel_jobs > \
            policy.max_parallel_jobs:
        out.append({"field": "settings.max_parallel_jobs", "message":
                    f"max_parallel_jobs {wf.settings.max_parallel_jobs} is over the most the "
                    f"policy of namespace '{ns.name}' allows, {policy.max_parallel_jobs}"})
    for i, job in enumerate(wf.jobs):
        kind = job.target_kind
        if ns.isolation == "container" and job.runs_on_target and kind != "container":
            bad(i, job.name, "target", f"namespace '{ns.name}' runs script jobs in containers "
                "only (isolation: container); give it a container target")
        if policy.allowed_targets is not None and job.runs_on_target and \
                kind not in policy.allowed_targets:
            bad(i, job.name, "target", f"target '{kind}' is not allowed (allowed: "
                + ", ".join(policy.allowed_targets) + ")")
        width = job.max_parallel or wf.settings.max_parallel_jobs
        if job.for_each is not None and policy.max_for_each is not None and \
                width > policy.max_for_each:
            bad(i, job.name, "max_parallel", f"a for-each {width} items wide is over the most "
                f"allowed, {policy.max_for_each}")
        if isinstance(job.for_each, list) and policy.max_for_each is not None and \
                len(job.for_each) > policy.max_for_each:
            bad(i, job.name, "for_each", f"a for-each over {len(job.for_each)} items is over "
                f"the most allowed, {policy.max_for_each}")
        target = job.target_options
        if isinstance(target, ContainerTarget):
            _container_problems(i, job.name, target, ns, bad)
    return out


def _container_problems(i: int, job: str, target: ContainerTarget, ns: NamespacePublic,
                        bad: Any) -> None:
    policy = ns.policy
    at = "target.container"
    image = target.image or runner_image_name()
    if policy.allowed_images is not None and image not in policy.allowed_images:
        bad(i, job, f"{at}.image", f"image '{image}' is not among the allowed images")
    if target.network == "host" and not policy.allow_host_network:
        bad(i, job, f"{at}.network", "network 'host' is not allowed: an admin grants it with "
            "the namespace policy allow_host_network")
    if target.user.split(":", 1)[0] in _ROOT_USERS and not policy.allow_root:
        bad(i, job, f"{at}.user", "a container job may not run as root unless the namespace "
            "policy allow_root says so")
    if not target.read_only and not policy.allow_writable_root:
        bad(i, job, f"{at}.read_only", "a writable root filesystem needs the namespace policy "
            "allow_writable_root")
    if policy.max_memory is not None and memory_bytes(target.memory) > \
            memory_bytes(policy.max_memory.lower()):
        bad(i, job, f"{at}.memory", f"memory {target.memory} is over the most allowed, "
            f"{policy.max_memory}")
    if policy.max_pids is not None and target.pids_limit > policy.max_pids:
        bad(i, job, f"{at}.pids_limit", f"pids_limit {target.pids_limit} is over the most "
            f"allowed, {policy.max_pids}")


async def check(session: AsyncSession, wf: Workflow) -> None:
    found = problems(wf, await settings_of(session, wf.ns))
    if found:
        raise SpecError(found)


def dump(ns: NamespacePublic) -> dict[str, Any]:
    return json.loads(ns.model_dump_json())


__all__ = ["check", "dump", "problems", "put", "settings_of"]
