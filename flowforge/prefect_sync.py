"""Workflow spec -> Prefect deployment, idempotently.

Prefect state is derived from the FlowForge definition, never the other way round: `deploy()`
writes the generated flow into the project directory and upserts the deployment (Prefect's
`POST /deployments/` is an upsert on flow and name), so running it twice changes nothing and
running it after Prefect was down converges. An existing deployment is updated in place (PATCH
without schedules) rather than upserted, because Prefect's upsert deletes and re-creates every
schedule and its scheduled runs; schedules and automations are then diffed trigger by trigger
(flowforge.trigger_sync), so changing one trigger touches one Prefect object. Every Prefect or
transport failure is translated once, here, into `PrefectUnavailableError` (retryable) so
callers can mark a workflow out of sync.
"""

from __future__ import annotations

import asyncio
import runpy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import yaml
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from flowforge import limit_sync, trigger_sync
from flowforge.compiler import CompiledFlow, compile_workflow
from flowforge.errors import PrefectUnavailableError
from flowforge.spec import Workflow
from flowforge.triggers import ScheduleTrigger


@dataclass(frozen=True)
class DeployTarget:
    """Where and how workflows are deployed."""

    api_url: str
    project_dir: Path
    work_pool: str
    timeout: float = 10.0
    #: Seconds for everything done with one `prefect_client`, retries included; None: no cap.
    deadline: float | None = None


@asynccontextmanager
async def prefect_client(target: DeployTarget) -> AsyncIterator[PrefectClient]:
    """A Prefect client on `target.api_url`; transport and 5xx errors, and running past
    `target.deadline`, become retryable errors."""
    try:
        async with asyncio.timeout(target.deadline), PrefectClient(
                target.api_url, httpx_settings={"timeout": target.timeout}) as client:
            yield client
    except TimeoutError as exc:  # before OSError, of which it is a subclass
        within = f"within {target.deadline:g}s" if target.deadline is not None else "in time"
        raise PrefectUnavailableError(f"Prefect API at {target.api_url} did not finish answering "
                                      f"{within} (overloaded?); try again later") from exc
    except httpx.TimeoutException as exc:  # str() of these is empty: say what happened
        raise PrefectUnavailableError(
            f"Prefect API at {target.api_url} did not answer within {target.timeout:g}s, "
            f"retries included ({type(exc).__name__}; overloaded?); try again later") from exc
    except (httpx.TransportError, OSError) as exc:
        raise PrefectUnavailableError(f"Prefect API at {target.api_url} is unreachable: "
                                      f"{exc or type(exc).__name__}") from exc
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code >= 500:
            raise PrefectUnavailableError(
                f"Prefect API error {exc.response.status_code}: {exc.response.text[:200]}"
            ) from exc
        raise


def deployment_name(workflow: str) -> str:
    """The deployment's full name, `flow/deployment`: both are the workflow's name."""
    return f"{workflow}/{workflow}"


def parameter_schema(compiled: CompiledFlow, path: Path) -> dict[str, Any]:
    """Prefect's own OpenAPI schema of the generated flow's parameters (for the UI run form)."""
    namespace = runpy.run_path(str(path))
    flow = namespace[compiled.function]
    schema: dict[str, Any] = flow.parameters.model_dump(exclude_unset=True)
    return schema


async def ensure_work_pool(client: PrefectClient, name: str, pool_type: str = "process",
                           defaults: dict[str, Any] | None = None) -> bool:
    """Create work pool `name` with its worker type's default job template unless it exists.

    Part of converging: a Prefect server that was wiped or replaced has no pool, and a
    deployment on a missing pool is refused. `defaults` overrides the template's job-variable
    defaults (e.g. a docker pool's image). Returns True when it created the pool.
    """
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    try:
        await client.read_work_pool(name)
        return False
    except ObjectNotFound:
        pass
    template: dict[str, Any] = {}
    if pool_type == "process":
        from prefect.workers.process import ProcessWorker

        template = ProcessWorker.get_default_base_job_template()
    elif pool_type == "docker":
        # Without the worker's own template the pool refuses custom images (PREFECT-NOTES 8).
        from prefect_docker.worker import DockerWorker

        template = DockerWorker.get_default_base_job_template()
    for key, value in (defaults or {}).items():
        template["variables"]["properties"][key]["default"] = value
    try:
        await client.create_work_pool(
            WorkPoolCreate(name=name, type=pool_type, base_job_template=template))
    except ObjectAlreadyExists:
        return False
    return True


async def pool_drift(client: PrefectClient, name: str, defaults: dict[str, Any],
                     keys: tuple[str, ...]) -> list[str]:
    """The job variables among `keys` whose default in pool `name` is not `defaults`' value.

    A pool is created once with FlowForge's defaults and never overwritten (its template is
    the operator's to edit), so one made by an older FlowForge keeps the older defaults.
    """
    pool = await client.read_work_pool(name)
    properties = (pool.base_job_template or {}).get("variables", {}).get("properties", {})
    return [key for key in keys if properties.get(key, {}).get("default") != defaults.get(key)]


async def deploy(wf: Workflow, target: DeployTarget) -> UUID:
    """Write the flow files, create or update the deployment, converge its triggers; returns its id."""
    compiled = compile_workflow(wf)
    path = compiled.write(target.project_dir / "flows")
    write_prefect_yaml(target.project_dir, target.work_pool)
    schema = parameter_schema(compiled, path)
    pull_steps = [{"prefect.deployments.steps.set_working_directory": {
        "directory": str(target.project_dir)}}]
    work_pool = wf.settings.work_pool or target.work_pool
    async with prefect_client(target) as client:
        await ensure_work_pool(client, target.work_pool)
        if work_pool != target.work_pool:
            await _require_work_pool(client, work_pool)
        try:
            existing = await client.read_deployment_by_name(deployment_name(wf.name))
        except ObjectNotFound:
            existing = None
        if existing is None:
            flow_id = await client.create_flow_from_name(wf.name)
            deployment_id = await client.create_deployment(
                flow_id=flow_id, name=wf.name, version=compiled.spec_hash,
                description=wf.description, work_pool_name=work_pool,
                entrypoint=compiled.entrypoint, path=str(target.project_dir),
                pull_steps=pull_steps, parameter_openapi_schema=schema,
                enforce_parameter_schema=True, tags=["flowforge"],
                **limit_sync.deployment_limit(wf),
            )
        else:
            deployment_id = existing.id
            await client.update_deployment(deployment_id, DeploymentUpdate(
                version=compiled.spec_hash, description=wf.description,
                work_pool_name=work_pool, entrypoint=compiled.entrypoint,
                path=str(target.project_dir), pull_steps=pull_steps,
                parameter_openapi_schema=schema, enforce_parameter_schema=True,
                tags=["flowforge"], paused=False, **limit_sync.deployment_limit(wf)))
        await limit_sync.ensure_job_limits(client, wf)
        plan = await trigger_sync.diff(client, wf, deployment_id)
        await trigger_sync.apply(client, deployment_id, plan)
    return deployment_id


async def _require_work_pool(client: PrefectClient, name: str) -> None:
    """A workflow's own pool is not created here (its type and template are the operator's
    choice, e.g. `flowforge up --docker`); until it exists the sync stays pending and retries."""
    try:
        await client.read_work_pool(name)
    except ObjectNotFound:
        raise PrefectUnavailableError(
            f"work pool '{name}' does not exist in Prefect (`flowforge up --docker` creates "
            "the docker pool)") from None


async def drift(wf: Workflow, target: DeployTarget) -> list[str]:
    """What differs between the workflow and Prefect (deployment, schedules, automations); no writes."""
    async with prefect_client(target) as client:
        try:
            deployment = await client.read_deployment_by_name(deployment_name(wf.name))
        except ObjectNotFound:
            return [f"deployment {deployment_name(wf.name)} is missing in Prefect"]
        problems = []
        if deployment.version != compile_workflow(wf).spec_hash:
            problems.append(f"deployment version {deployment.version} is not the workflow's "
                            f"spec hash {compile_workflow(wf).spec_hash}")
        if deployment.paused:
            problems.append("deployment is paused in Prefect")
        return problems + (await trigger_sync.diff(client, wf, deployment.id)).drift


async def orphan_automations(workflows: set[str], target: DeployTarget,
                             delete: bool) -> list[str]:
    """FlowForge automations whose workflow is gone (e.g. deleted while Prefect was down)."""
    async with prefect_client(target) as client:
        found = trigger_sync.orphans(await trigger_sync.flowforge_automations(client), workflows)
        if delete:
            for a in found:
                await client.delete_automation(a.id)
    return [a.name for a in found]


async def undeploy(name: str, target: DeployTarget) -> bool:
    """Delete the workflow's deployment and flow files; False if there was no deployment."""
    for suffix in (".py", ".json"):
        (target.project_dir / "flows" / f"{compile_name(name)}{suffix}").unlink(missing_ok=True)
    write_prefect_yaml(target.project_dir, target.work_pool)
    async with prefect_client(target) as client:
        # Automations first: a deleted deployment's automation keeps firing (gotcha 11).
        await trigger_sync.delete_workflow_automations(client, name)
        try:
            deployment = await client.read_deployment_by_name(deployment_name(name))
            await client.delete_deployment(deployment.id)
        except ObjectNotFound:  # never there, or removed meanwhile by a concurrent sync
            return False
    return True


async def deployment_id(name: str, target: DeployTarget) -> UUID | None:
    async with prefect_client(target) as client:
        try:
            return (await client.read_deployment_by_name(deployment_name(name))).id
        except ObjectNotFound:
            return None


def compile_name(workflow: str) -> str:
    from flowforge.compiler import identifier

    return identifier(workflow)


def write_prefect_yaml(project_dir: Path, work_pool: str, pull_dir: str | None = None) -> Path:
    """`prefect.yaml` listing every compiled workflow, so `prefect deploy --all` works.

    Built from the JSON specs in `flows/`, sorted by name, so it is byte-stable. `pull_dir`
    None writes the project directory itself as the pull step's working directory.
    """
    entries = []
    for spec_file in sorted((project_dir / "flows").glob("*.json")):
        wf = Workflow.model_validate_json(spec_file.read_text())
        compiled = compile_workflow(wf)
        entry: dict[str, Any] = {
            "name": wf.name,
            "entrypoint": compiled.entrypoint,
            "version": compiled.spec_hash,
            "tags": ["flowforge"],
            "work_pool": {"name": wf.settings.work_pool or work_pool},
        }
        if wf.description:
            entry["description"] = wf.description
        schedules = [{"cron": t.cron, "timezone": t.timezone, "active": t.enabled}
                     for t in wf.triggers if isinstance(t, ScheduleTrigger)]
        if schedules:
            entry["schedules"] = schedules
        if wf.settings.max_concurrent_runs is not None:
            entry["concurrency_limit"] = {
                "limit": wf.settings.max_concurrent_runs,
                "collision_strategy": "CANCEL_NEW" if wf.settings.on_limit == "cancel_new"
                else "ENQUEUE"}
        entries.append(entry)
    doc: dict[str, Any] = {"name": "flowforge", "prefect-version": "3.8.8"}
    directory = str(pull_dir or project_dir)
    doc["pull"] = [{"prefect.deployments.steps.set_working_directory": {"directory": directory}}]
    doc["deployments"] = entries
    text = ("# Generated by FlowForge from the workflows in flows/; do not edit.\n"
            "# `prefect deploy --all` deploys every workflow.\n"
            + yaml.safe_dump(doc, sort_keys=False))
    path = project_dir / "prefect.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


__all__ = [
    "DeployTarget",
    "deploy",
    "deployment_id",
    "deployment_name",
    "drift",
    "ensure_work_pool",
    "orphan_automations",
    "pool_drift",
    "prefect_client",
    "undeploy",
    "write_prefect_yaml",
]
