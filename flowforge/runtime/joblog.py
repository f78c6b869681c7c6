"""A job's log lines into Prefect's log of its task run, secrets masked, from any thread.

An executor hands over output lines in its own reader threads, which have no Prefect run
context, so the contexts are taken when the log function is made (in the job's task thread)
and the logger is made on the first line (most for-each items print nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.loggers import task_run_logger

from flowforge.core.secretrefs import Masker


def job_log(masker: Masker) -> Callable[[str, str], None]:
    """`log(stream, line)`: stdout lines at INFO, stderr lines at WARNING."""
    task_ctx, flow_ctx = TaskRunContext.get(), FlowRunContext.get()
    loggers: list[Any] = [] if task_ctx is not None else [get_run_logger()]

    def log(stream: str, line: str) -> None:
        if not loggers:
            assert task_ctx is not None
            loggers.append(task_run_logger(
                task_run=task_ctx.task_run, task=task_ctx.task,
                flow_run=flow_ctx.flow_run if flow_ctx else None,
                flow=flow_ctx.flow if flow_ctx else None))
        level = logging.WARNING if stream == "stderr" else logging.INFO
        loggers[0].log(level, "%s", masker.mask(line))

    return log


def info_log(masker: Masker) -> Callable[[str], None]:
    """`log(line)` at INFO, for what a job reports about itself (a request's answer)."""
    log = job_log(masker)
    return lambda line: log("stdout", line)


__all__ = ["info_log", "job_log"]
