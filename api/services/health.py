"""What `/healthz` reports: each part of the stack, each checked within a bound of its own.

A frozen Prefect server must not freeze the health check too: the check is what an operator
(or a load balancer) asks to find out that Prefect is the part that is down.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from flowforge.controlplane import store
from flowforge.controlplane.client import PrefectTarget, prefect_client


async def _answer(what: Awaitable[Any], seconds: float) -> tuple[Any, str | None]:
    """What `what` returned within `seconds`, or why not (the part's check text)."""
    try:
        return await asyncio.wait_for(what, timeout=seconds), None
    except TimeoutError:
        return None, f"error: no answer within {seconds:g}s"
    except Exception as exc:
        return None, f"error: {exc}"


async def _database(session: AsyncSession) -> str:
    await session.exec(text("SELECT 1"))  # type: ignore[call-overload]
    return "ok"


async def _prefect(target: PrefectTarget) -> dict[str, str]:
    async with prefect_client(target) as client:
        return await store.health(client, target.work_pool)


def processes(home: Path) -> str | None:
    """What `flowforge up` says of the processes it keeps (run/pids.json): "ok", or each one
    that is down or restarting and why; None when no supervisor runs this home."""
    try:
        data = json.loads((home / "run" / "pids.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("state") != "running":
        return None
    down = [f"{name} {child.get('status')} (it {child.get('last_exit')})"
            for name, child in (data.get("children") or {}).items()
            if isinstance(child, dict) and child.get("status", "running") != "running"]
    return "; ".join(down) if down else "ok"


async def check(session: AsyncSession, target: PrefectTarget, seconds: float,
                home: Path | None = None) -> dict[str, str]:
    """`{"api", "database", "prefect", "worker"}` (and `processes` under `flowforge up`):
    "ok", or what is wrong with that part."""
    checks: dict[str, str] = {"api": "ok"}
    kept = processes(home) if home is not None else None
    if kept is not None:
        checks["processes"] = kept
    database, problem = await _answer(_database(session), seconds)
    checks["database"] = problem or database
    prefect, problem = await _answer(_prefect(target), seconds)
    if problem is None:
        checks.update(prefect)
    else:
        checks["prefect"], checks["worker"] = problem, "unknown"
    return checks


def healthy(checks: dict[str, str]) -> bool:
    return all(value == "ok" for value in checks.values())


__all__ = ["check", "healthy", "processes"]
