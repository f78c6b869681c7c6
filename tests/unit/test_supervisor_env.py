"""What `flowforge up` hands the Prefect server and the API it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowforge.cli._app import settings_from_options
from flowforge.stack.api_process import api_argv, api_env
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


def _host(argv: list[str]) -> str:
    assert argv.count("--host") == 1, argv
    return argv[argv.index("--host") + 1]


def test_the_api_listens_on_loopback_unless_told_otherwise(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings as `flowforge up` builds them from its options and FLOWFORGE_* variables;
    the API child's command line is what binds it."""
    monkeypatch.delenv("FLOWFORGE_API_HOST", raising=False)
    default = settings_from_options(Settings, home=tmp_path, api_host=None, api_port=8123)
    argv = api_argv(default)
    assert argv[argv.index("uvicorn") + 1] == "api.main:app"
    assert _host(argv) == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "8123"
    assert api_env(default, "http://127.0.0.1:4200/api", None)["FLOWFORGE_API_HOST"] == \
        "127.0.0.1"
    assert _host(api_argv(default, port=8124)) == "127.0.0.1"  # the replicas too
    monkeypatch.setenv("FLOWFORGE_API_HOST", "0.0.0.0")  # the operator says so
    assert _host(api_argv(settings_from_options(Settings, home=tmp_path, api_host=None))) == \
        "0.0.0.0"
    assert _host(api_argv(settings_from_options(Settings, home=tmp_path,
                                                api_host="10.1.2.3"))) == "10.1.2.3"
