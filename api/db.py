"""Database engine, sessions and migrations.

The API is async end to end, so it talks to the database through SQLAlchemy's async engine
(aiosqlite for SQLite, psycopg 3 for PostgreSQL); Alembic runs with the matching sync driver at
start-up. Any SQLAlchemy URL works: `sqlite:///...` and `postgresql://...` are given the right
drivers here so users can write the URL they know.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

MIGRATIONS = Path(__file__).parent / "migrations"


def _with_driver(url: str, sqlite: str, postgres: str) -> str:
    scheme, sep, rest = url.partition("://")
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        return f"{sqlite}{sep}{rest}"
    if base in ("postgresql", "postgres"):
        return f"{postgres}{sep}{rest}"
    return url


def sync_url(url: str) -> str:
    return _with_driver(url, "sqlite", "postgresql+psycopg")


def async_url(url: str) -> str:
    return _with_driver(url, "sqlite+aiosqlite", "postgresql+psycopg")


def head_revision() -> str:
    """The newest migration: what `migrate` brings a database to."""
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


#: The advisory lock key migrations hold on PostgreSQL (any constant no other lock uses;
#: the per-workflow sync locks are hashes of names, see api/services/sync.py).
MIGRATION_LOCK = 0x466C6F77466F7267  # "FlowForg"


def migrate(url: str) -> None:
    """Bring the schema to the latest revision (blocking; the API runs it in a thread)."""
    if url.startswith("sqlite"):
        path = url.partition(":///")[2]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sync_url(url))
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # API replicas starting together on a fresh database would each create the
                # tables; the first to hold this lock migrates (DDL is transactional on
                # PostgreSQL), the others then find the schema at head.
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
        if url.startswith("sqlite"):
            # WAL: readers (the key lookup of every request above all) never wait for a
            # writer, nor a writer for them; the mode stays with the database file.
            with engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    finally:
        engine.dispose()


def make_engine(url: str) -> AsyncEngine:
    return create_async_engine(async_url(url), pool_pre_ping=True)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def session_scope(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with maker() as session:
        yield session


__all__ = ["async_url", "make_engine", "migrate", "session_scope", "sessionmaker", "sync_url"]
