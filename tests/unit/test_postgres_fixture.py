"""The PostgreSQL test helper: a real server, reachable through SQLAlchemy + psycopg, that
is gone (process and port) once stopped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.fixtures.postgres import _ci, find_bindir, port_is_open, start_postgres

pytestmark = pytest.mark.postgres


def _select(url: str, query: str) -> object:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(query)).scalar_one()
    finally:
        engine.dispose()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


@pytest.fixture
def bindir() -> Path:
    found = find_bindir()
    if found is None:
        reason = "PostgreSQL server binaries not found; run scripts/system-deps.sh"
        if _ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return found


def test_start_select_and_stop(tmp_path: Path, bindir: Path) -> None:
    with start_postgres(tmp_path, bindir) as server:
        assert server.url.startswith("postgresql+psycopg://")
        assert f"@127.0.0.1:{server.port}/flowforge" in server.url
        assert port_is_open(server.port)
        assert _select(server.url, "SELECT 1") == 1
        assert _select(server.url, "SELECT current_database()") == "flowforge"
        assert _select(server.url, "SHOW listen_addresses") == "127.0.0.1"
        pid, port, data_dir = server.pid, server.port, server.data_dir
        assert pid is not None and _pid_alive(pid)
        assert data_dir.joinpath("PG_VERSION").exists()

    assert not server.running
    assert not _pid_alive(pid)
    assert not port_is_open(port)
    assert not data_dir.exists()
    server.stop()  # idempotent
    with pytest.raises(sa.exc.OperationalError):
        _select(server.url, "SELECT 1")


def test_session_fixture(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg://")
    assert postgres_url.endswith("/flowforge")
    assert _select(postgres_url, "SELECT 1") == 1
