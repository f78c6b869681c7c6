"""`type: sql`: one statement against PostgreSQL, parameters bound by the driver.

`connection` names a secret holding the database URL, so neither the document nor the run's
records hold a password. `query` is never a template: values go in `params` and reach the
statement as `%(name)s` placeholders bound by psycopg, so no value is ever SQL text. The output
is the rows (capped at `max_rows`, with `truncated`), one row, or only the row count.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import Field

from flowforge.core import templates
from flowforge.core.checks import Bad, CheckContext
from flowforge.core.jobs.base import JobBase
from flowforge.core.names import SECRET_NAME_RE, reserved_name_problem

#: psycopg's named placeholders: `%(name)s` (text), `%(name)b` (binary), `%(name)t` (either).
PLACEHOLDER_RE: Final = re.compile(r"%\((?P<name>[^)]*)\)[sbt]")
DEFAULT_MAX_ROWS: Final = 1000
DEFAULT_STATEMENT_TIMEOUT: Final = 30.0


class SqlJob(JobBase):
    type: Literal["sql"] = "sql"
    connection: str | None = None
    query: str | None = None
    fetch: Literal["none", "one", "all"] | None = None
    max_rows: Annotated[int | None, Field(ge=1, le=100_000)] = None
    statement_timeout: Annotated[float | None, Field(gt=0, le=86400)] = None

    @property
    def fetch_mode(self) -> str:
        return self.fetch or "all"

    def placeholders(self) -> list[str]:
        return [m.group("name") for m in PLACEHOLDER_RE.finditer(self.query or "")]

    def secret_names(self) -> set[str]:
        return super().secret_names() | ({self.connection} if self.connection else set())

    def check_kind(self, ctx: CheckContext, bad: Bad) -> None:
        if not self.connection:
            bad("connection", "a sql job needs 'connection': the name of a secret holding a "
                "PostgreSQL URL (postgresql://user:password@host/db)")
        elif not SECRET_NAME_RE.match(self.connection):
            bad("connection", f"'{self.connection[:80]}' is not a secret name (lowercase "
                "letters, digits and single '-')")
        elif (reserved := reserved_name_problem(self.connection)) is not None:
            bad("connection", f"secret '{self.connection}' cannot be read by a job: {reserved}")
        if not self.query or not self.query.strip():
            bad("query", "a sql job needs a non-empty 'query'")
            return
        if templates.is_template(self.query):
            bad("query", "'query' is never a template: pass values in 'params' and use them "
                "as %(name)s placeholders, which the driver binds")
            return
        for name in self.placeholders():
            if name not in self.params:
                bad("query", f"placeholder %({name})s has no value in 'params'")


__all__ = ["DEFAULT_MAX_ROWS", "DEFAULT_STATEMENT_TIMEOUT", "PLACEHOLDER_RE", "SqlJob"]
