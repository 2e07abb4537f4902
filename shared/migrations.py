"""Alembic, driven from code: each service keeps its own `migrations/` folder."""

import asyncio
import tempfile
import threading
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import BigInteger, MetaData, TextClause, bindparam, pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from shared.registry import migration_lock_key

# Session-level advisory locks: held by the migrating connection until it lets go (or
# closes), whatever happens to the transactions in between.
_LOCK = text("SELECT pg_advisory_lock(:key)").bindparams(bindparam("key", type_=BigInteger))
_UNLOCK = text("SELECT pg_advisory_unlock(:key)").bindparams(bindparam("key", type_=BigInteger))


def alembic_config(
    migrations_dir: Path, database_url: str, *, lock_name: str | None = None
) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["database_url"] = database_url
    if lock_name is not None:
        config.attributes["advisory_lock_key"] = migration_lock_key(lock_name)
    return config


# Alembic's `context` and `op` are process-wide proxies: one migration at a time per process.
_migration_lock = threading.Lock()


def upgrade_to_head(
    migrations_dir: Path, database_url: str, *, lock_name: str | None = None
) -> None:
    """Blocking; call it in a thread or before the event loop starts.

    On PostgreSQL the upgrade holds an advisory lock named after the service (`lock_name`,
    by default the name of the package that holds `migrations_dir`): replicas that migrate
    at the same time take turns, and the ones that come later find the schema at head."""
    lock_name = lock_name or migrations_dir.resolve().parent.name
    with _migration_lock:
        command.upgrade(alembic_config(migrations_dir, database_url, lock_name=lock_name), "head")


async def upgrade_to_head_async(
    migrations_dir: Path, database_url: str, *, lock_name: str | None = None
) -> None:
    await asyncio.to_thread(upgrade_to_head, migrations_dir, database_url, lock_name=lock_name)


def run_env(target_metadata: MetaData) -> None:
    """The body of every service's `migrations/env.py`."""
    url = context.config.attributes.get("database_url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    assert url, "no database url given to alembic"

    def configure(connection: Connection | None = None) -> None:
        context.configure(
            connection=connection,
            url=None if connection is not None else url,
            target_metadata=target_metadata,
            render_as_batch=url.startswith("sqlite"),
            compare_type=True,
        )

    if context.is_offline_mode():
        configure()
        with context.begin_transaction():
            context.run_migrations()
        return

    def run_sync(connection: Connection) -> None:
        configure(connection)
        with context.begin_transaction():
            context.run_migrations()

    lock_key: int | None = context.config.attributes.get("advisory_lock_key")

    async def run_async() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        async with engine.connect() as connection:
            locked = lock_key is not None and connection.dialect.name == "postgresql"
            if locked:
                # Waits while another process migrates this service's database; the
                # migrations then read the version table as that process left it.
                await _advisory(connection, _LOCK, lock_key)
            try:
                await connection.run_sync(run_sync)
                await connection.commit()
            finally:
                if locked:
                    await connection.rollback()
                    await _advisory(connection, _UNLOCK, lock_key)
        await engine.dispose()

    asyncio.run(run_async())


async def _advisory(connection: AsyncConnection, statement: TextClause, key: int | None) -> None:
    await connection.execute(statement, {"key": key})
    await connection.commit()


def new_revision(migrations_dir: Path, message: str) -> None:
    """Autogenerates the next revision by comparing the models with a scratch SQLite database."""
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite+aiosqlite:///{scratch}/scratch.db"
        config = alembic_config(migrations_dir, url)
        command.upgrade(config, "head")
        heads = ScriptDirectory.from_config(config).get_heads()
        next_id = f"{int(heads[0]) + 1:04d}" if heads else "0001"
        command.revision(config, message=message, autogenerate=True, rev_id=next_id)
