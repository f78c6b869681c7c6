"""Workflow -> Prefect deployment, idempotently; and back out of Prefect when it is deleted.

Prefect state is derived from the FlowForge definition, never the other way round: `deploy()`
writes the generated flow into the project directory and creates or updates the deployment,
so running it twice changes nothing and running it after Prefect was down converges. An
existing deployment is updated in place (PATCH without schedules) rather than upserted,
because Prefect's upsert deletes and re-creates every schedule and its scheduled runs;
schedules and automations are then diffed trigger by trigger (`triggers`), so changing one
trigger touches one Prefect object.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.exceptions import ObjectNotFound

from flowforge.controlplane import limits, pools, triggers
from flowforge.controlplane.client import PrefectTarget, prefect_client
from flowforge.controlplane.compiler import CompiledFlow, compile_workflow
from flowforge.controlplane.project import write_prefect_yaml
from flowforge.core.errors import PrefectUnavailableError
from flowforge.core.names import module_name
from flowforge.core.workflow import Workflow


def deployment_name(workflow: str) -> str:
    """The deployment's full name, `flow/deployment`: both are the workflow's name."""
    return f"{workflow}/{workflow}"


def parameter_schema(compiled: CompiledFlow, path: Path) -> dict[str, Any]:
    """Prefect's own OpenAPI schema of the generated flow's parameters (for the UI run form)."""
    namespace = runpy.run_path(str(path))
    flow = namespace[compiled.function]
    schema: dict[str, Any] = flow.parameters.model_dump(exclude_unset=True)
    return schema


async def deploy(wf: Workflow, target: PrefectTarget) -> UUID:
    """Write the flow files, create or update the deployment, converge its triggers; returns its id."""
    compiled = compile_workflow(wf)
    path = compiled.write(target.project_dir / "flows")
    write_prefect_yaml(target.project_dir, target.work_pool)
    schema = parameter_schema(compiled, path)
    pull_steps = [{"prefect.deployments.steps.set_working_directory": {
        "directory": str(target.project_dir)}}]
    work_pool = wf.settings.work_pool or target.work_pool
    async with prefect_client(target) as client:
        await pools.ensure_work_pool(client, target.work_pool)
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
                **limits.deployment_limit(wf),
            )
        else:
            deployment_id = existing.id
            await client.update_deployment(deployment_id, DeploymentUpdate(
                version=compiled.spec_hash, description=wf.description,
                work_pool_name=work_pool, entrypoint=compiled.entrypoint,
                path=str(target.project_dir), pull_steps=pull_steps,
                parameter_openapi_schema=schema, enforce_parameter_schema=True,
                tags=["flowforge"], paused=False, **limits.deployment_limit(wf)))
        await limits.ensure_job_limits(client, wf)
        plan = await triggers.diff(client, wf, deployment_id)
        await triggers.apply(client, deployment_id, plan)
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


async def drift(wf: Workflow, target: PrefectTarget) -> list[str]:
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
        return problems + (await triggers.diff(client, wf, deployment.id)).drift


async def orphan_automations(workflows: set[str], target: PrefectTarget,
                             delete: bool) -> list[str]:
    """FlowForge automations whose workflow is gone (e.g. deleted while Prefect was down)."""
    async with prefect_client(target) as client:
        found = triggers.orphans(await triggers.flowforge_automations(client), workflows)
        if delete:
            for a in found:
                await client.delete_automation(a.id)
    return [a.name for a in found]


async def undeploy(name: str, target: PrefectTarget) -> bool:
    """Delete the workflow's deployment and flow files; False if there was no deployment."""
    for suffix in (".py", ".json"):
        (target.project_dir / "flows" / f"{module_name(name)}{suffix}").unlink(missing_ok=True)
    write_prefect_yaml(target.project_dir, target.work_pool)
    async with prefect_client(target) as client:
        # Automations first: Prefect keeps a deleted deployment's automations firing.
        await triggers.delete_workflow_automations(client, name)
        try:
            deployment = await client.read_deployment_by_name(deployment_name(name))
            await client.delete_deployment(deployment.id)
        except ObjectNotFound:  # never there, or removed meanwhile by a concurrent sync
            return False
    return True


async def deployment_id(name: str, target: PrefectTarget) -> UUID | None:
    async with prefect_client(target) as client:
        try:
            return (await client.read_deployment_by_name(deployment_name(name))).id
        except ObjectNotFound:
            return None


__all__ = ["deploy", "deployment_id", "deployment_name", "drift", "orphan_automations",
           "parameter_schema", "undeploy"]
