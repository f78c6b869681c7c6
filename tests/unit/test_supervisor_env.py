"""What `flowforge up` hands the Prefect server it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowforge.stack.prefect_server import prefect_database_url, prefect_server_env
from flowforge.stack.settings import StackSettings as Settings


def test_the_default_prefect_database_is_sqlite_in_the_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert prefect_database_url(settings) == \
        f"sqlite+aiosqlite:///{tmp_path / 'prefect' / 'prefect.db'}"


@pytest.mark.parametrize(("given", "expected"), [
    ("postgresql://ff:pw@127.0.0.1:5432/prefect", "postgresql+asyncpg://ff:pw@127.0.0.1:5432/prefect"),
    ("postgresql+psycopg://ff@127.0.0.1/prefect", "postgresql+asyncpg://ff@127.0.0.1/prefect"),
    ("postgres://ff@127.0.0.1/prefect", "postgresql+asyncpg://ff@127.0.0.1/prefect"),
    ("sqlite:////data/prefect.db", "sqlite+aiosqlite:////data/prefect.db"),
])
def test_a_configured_prefect_database_gets_the_async_driver(tmp_path: Path, given: str,
                                                             expected: str) -> None:
    settings = Settings(home=tmp_path, prefect_database_url=given)
    assert prefect_database_url(settings) == expected
    assert prefect_server_env(settings)["PREFECT_API_DATABASE_CONNECTION_URL"] == expected
