"""The sql job kind: its validation, and its runtime module against a real PostgreSQL server.

The runtime module is driven directly (a job context with its secrets loaded), so every shape
of output and every failure is quick to reach; the whole path through a flow run, a Prefect
secret and the API is `tests/integration/test_job_types.py`.
"""

from __future__ import annotations

from typing import Any

import pytest

from flowforge.core.errors import JobError, SpecError
from flowforge.core.jobs import SqlJob
from flowforge.core.templates import RenderContext
from flowforge.core.validation import load_workflow
from flowforge.runtime.kinds import runner
from flowforge.runtime.kinds.base import JobContext
from flowforge.runtime.kinds.sql import json_value
from tests.fixtures.postgres import PostgresServer


def sql(name: str = "q", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "sql", "connection": "warehouse", "query": "select 1", **extra}


def problems(*jobs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    with pytest.raises(SpecError) as info:
        load_workflow({"name": "wf", "jobs": list(jobs)})
    return {p["field"]: p for p in info.value.problems}


# --- validation ---------------------------------------------------------------------------------

def test_a_full_sql_job_is_valid() -> None:
    wf = load_workflow({"name": "wf", "inputs": {"region": {"type": "string", "default": "eu"}},
                        "jobs": [sql(query="select * from t where region = %(region)s",
                                     params={"region": "{{ inputs.region }}"}, fetch="one",
                                     max_rows=10, statement_timeout=5)]})
    job = wf.jobs[0]
    assert isinstance(job, SqlJob) and job.placeholders() == ["region"]
    assert job.secret_names() == {"warehouse"} and job.fetch_mode == "one"


@pytest.mark.parametrize(("job", "field", "text"), [
    (sql(connection=None), "jobs[0].connection", "needs 'connection'"),
    (sql(connection="Not A Name"), "jobs[0].connection", "not a secret name"),
    (sql(query=""), "jobs[0].query", "non-empty 'query'"),
    (sql(query="select * from t where id = {{ inputs.id }}"), "jobs[0].query",
     "never a template"),
    (sql(query="select %(missing)s"), "jobs[0].query", "%(missing)s has no value"),
    (sql(fetch="many"), "jobs[0].fetch", "'none', 'one' or 'all'"),
    (sql(max_rows=0), "jobs[0].max_rows", "greater than"),
    (sql(url="http://x"), "jobs[0].url", "belongs to http jobs"),
    (sql(params={"p": "{{ secrets.pw }}"}), "jobs[0].params.p", "secrets cannot be used"),
    (sql(target={"container": {}}), "jobs[0].target.container", "runs script jobs"),
])
def test_bad_sql_jobs_name_job_and_field(job: dict[str, Any], field: str, text: str) -> None:
    found = problems(job)
    assert field in found, found
    assert text in found[field]["message"] and found[field]["job"] == job["name"]


def test_sql_fields_belong_to_sql_jobs() -> None:
    found = problems({"name": "s", "runtime": "bash", "script": "true", "connection": "x"})
    assert "belongs to sql jobs" in found["jobs[0].connection"]["message"]


# --- the runtime module on a real server ----------------------------------------------------------

def _url(pg: PostgresServer) -> str:
    return f"postgresql://{pg.user}@{pg.host}:{pg.port}/{pg.database}"


def run(pg: PostgresServer, url: str | None = None, inputs: dict[str, Any] | None = None,
        **fields: Any) -> dict[str, Any]:
    job = SqlJob.model_validate(sql(**fields))
    lines: list[str] = []
    ctx = JobContext(scope=None, job=job, upstream={}, attempt=1,  # type: ignore[arg-type]
                     context=RenderContext({"inputs": inputs or {}, "jobs": {},
                                            "secrets": {"warehouse": url or _url(pg)}}),
                     log=lambda stream, line: lines.append(line))
    output, condition = runner("sql")(ctx)
    assert condition is None and lines, lines
    result: dict[str, Any] = output
    return result


@pytest.fixture(scope="module")
def pg(postgres_server: PostgresServer) -> PostgresServer:
    run(postgres_server, query="create table if not exists sqljob (id int primary key, "
        "name text, amount numeric, seen timestamptz default '2026-01-02T03:04:05Z')",
        fetch="none")
    return postgres_server


def test_rows_come_back_with_their_columns(pg: PostgresServer) -> None:
    run(pg, query="delete from sqljob", fetch="none")
    out = run(pg, query="insert into sqljob (id, name, amount) values (1, 'a', 1.50), "
              "(2, 'b', 10) returning id")
    assert out == {"rows": [{"id": 1}, {"id": 2}], "row_count": 2, "columns": ["id"],
                   "truncated": False}
    out = run(pg, query="select id, name, amount, seen from sqljob order by id")
    assert out["rows"] == [
        {"id": 1, "name": "a", "amount": 1.5, "seen": "2026-01-02T03:04:05+00:00"},
        {"id": 2, "name": "b", "amount": 10, "seen": "2026-01-02T03:04:05+00:00"}]
    assert out["columns"] == ["id", "name", "amount", "seen"]


def test_parameters_are_bound_never_formatted(pg: PostgresServer) -> None:
    evil = "x'; drop table sqljob; --"
    out = run(pg, query="select %(name)s::text as name, %(n)s::int + 1 as n",
              params={"name": "{{ inputs.name }}", "n": "{{ inputs.n }}"},
              inputs={"name": evil, "n": 41}, fetch="one")
    assert out["row"] == {"name": evil, "n": 42}
    assert run(pg, query="select count(*) as c from sqljob", fetch="one")["row"]["c"] >= 0


def test_fetch_one_none_and_the_row_cap(pg: PostgresServer) -> None:
    # streamed rows carry their columns; a result without rows has none to show
    assert run(pg, query="select 1 as a where false", fetch="one") == {
        "row": None, "row_count": 0, "columns": []}
    out = run(pg, query="update sqljob set name = name where id > 0", fetch="none")
    assert out == {"row_count": 2}
    assert run(pg, query="create temp table t (a int)", fetch="none") == {"row_count": None}
    capped = run(pg, query="select g from generate_series(1, 5000) g", max_rows=3)
    assert capped["rows"] == [{"g": 1}, {"g": 2}, {"g": 3}]
    assert capped["truncated"] is True and capped["row_count"] == 5000


def test_a_capped_statement_that_changes_rows_still_commits(pg: PostgresServer) -> None:
    run(pg, query="delete from sqljob where id >= 100", fetch="none")
    out = run(pg, query="insert into sqljob (id, name) select g, 'bulk' from "
              "generate_series(100, 149) g returning id", max_rows=5)
    assert out["truncated"] and out["row_count"] == 50 and len(out["rows"]) == 5
    assert run(pg, query="select count(*) as c from sqljob where name = 'bulk'",
               fetch="one")["row"] == {"c": 50}


def test_statement_timeout_cancels_on_the_server(pg: PostgresServer) -> None:
    with pytest.raises(JobError, match=r"ran past its timeout of 0.5s and was cancelled"):
        run(pg, query="select pg_sleep(5)", statement_timeout=0.5)


def test_bad_sql_and_bad_connections_fail_with_a_clear_message(pg: PostgresServer) -> None:
    with pytest.raises(JobError, match=r"job 'q': UndefinedTable: relation \"nope\" does not"):
        run(pg, query="select * from nope")
    with pytest.raises(JobError, match="does not hold a PostgreSQL URL") as info:
        run(pg, url="mysql://root:hunter2@127.0.0.1/db")
    assert "hunter2" not in str(info.value)
    with pytest.raises(JobError, match="OperationalError") as info:
        run(pg, url=f"postgresql://nobody:hunter2@127.0.0.1:{pg.port}/nowhere")
    assert "hunter2" not in str(info.value)


def test_values_become_json() -> None:
    import datetime as dt
    import decimal
    import uuid

    assert json_value(decimal.Decimal("2.50")) == 2.5 and json_value(decimal.Decimal("3")) == 3
    assert json_value(decimal.Decimal("NaN")) == "NaN" and json_value(float("inf")) == "inf"
    assert json_value(dt.date(2026, 1, 2)) == "2026-01-02"
    assert json_value(dt.timedelta(minutes=2)) == 120.0
    assert json_value(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert json_value(b"\x00\x01") == "AAE=" and json_value([1, {"a": b"x"}]) == [1, {"a": "eA=="}]
