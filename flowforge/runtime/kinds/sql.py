"""Sql jobs: one statement against PostgreSQL through psycopg, parameters bound by the driver.

The connection URL comes from the secret the job names (masked in everything the job
reports). The statement runs in one transaction, committed when it succeeds, with the server's
own `statement_timeout`, so a slow query is cancelled by PostgreSQL rather than left running
after the job gave up. Rows are streamed (libpq's single-row mode, `Cursor.stream`): the first
`max_rows` are kept and the rest only counted, so a large result never sits in memory and a
statement that changes rows is never cut short by the cap.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import uuid
from typing import Any

from flowforge.core.errors import JobError
from flowforge.core.jobs import SqlJob
from flowforge.core.jobs.sql import DEFAULT_MAX_ROWS, DEFAULT_STATEMENT_TIMEOUT
from flowforge.runtime.kinds.base import JobContext, KindResult

#: How long connecting may take before the job fails (the server may be down or unreachable).
CONNECT_TIMEOUT = 10


def json_value(value: Any) -> Any:
    """A PostgreSQL value as JSON: numbers stay numbers, the rest becomes readable text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return str(value)


def _url(job: SqlJob, secrets: dict[str, str]) -> str:
    assert job.connection is not None  # guaranteed by the spec
    url = secrets[job.connection].strip()
    if not url.startswith(("postgresql://", "postgres://")):
        raise JobError(f"job '{job.name}': secret '{job.connection}' does not hold a PostgreSQL "
                       "URL (postgresql://user:password@host:5432/database)")
    return url


def run(ctx: JobContext) -> KindResult:
    import psycopg
    from psycopg.rows import dict_row

    job = ctx.job
    assert isinstance(job, SqlJob) and job.query is not None
    url = _url(job, ctx.context["secrets"])
    params = ctx.render("params", job.params)
    timeout = job.statement_timeout or job.timeout or DEFAULT_STATEMENT_TIMEOUT
    limit = 1 if job.fetch_mode == "one" else job.max_rows or DEFAULT_MAX_ROWS
    options = f"-c statement_timeout={max(1, int(timeout * 1000))}"
    mode = job.fetch_mode
    count: int | None = None
    kept: list[dict[str, Any]] = []
    columns: list[str] = []
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT, options=options,
                             row_factory=dict_row) as conn, conn.cursor() as cursor:
            if mode == "none":
                cursor.execute(job.query, params or None)
                # -1: a statement without a row count (DDL); shown as null, not as -1 rows
                count = cursor.rowcount if cursor.rowcount >= 0 else None
            else:
                streamed = 0
                for row in cursor.stream(job.query, params or None):
                    if streamed < limit:
                        kept.append({k: json_value(v) for k, v in row.items()})
                    streamed += 1
                count = streamed
                columns = [c.name for c in cursor.description or []]
            status = cursor.statusmessage
            conn.commit()
    except psycopg.errors.QueryCanceled as exc:
        raise JobError(f"job '{job.name}': the statement ran past its timeout of {timeout:g}s "
                       f"and was cancelled: {_first_line(exc)}") from None
    except psycopg.Error as exc:
        # The driver's message names the server and the SQL problem, never the password.
        raise JobError(f"job '{job.name}': {type(exc).__name__}: {_first_line(exc)}") from None
    ctx.info(f"{status or 'done'}" + ("" if count is None else f"; {count} row(s)"))
    if mode == "none":
        return {"row_count": count}, None
    if mode == "one":
        return {"row": kept[0] if kept else None, "row_count": count, "columns": columns}, None
    return {"rows": kept, "row_count": count, "columns": columns,
            "truncated": (count or 0) > limit}, None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


__all__ = ["json_value", "run"]
