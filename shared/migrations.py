"""Alembic, driven from code: each service keeps its own `migrations/` folder."""

import asyncio
import tempfile
import threading
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine


def alembic_config(migrations_dir: Path, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["database_url"] = database_url
    return config


# Alembic's `context` and `op` are process-wide proxies: one migration at a time per process.
_migration_lock = threading.Lock()


def upgrade_to_head(migrations_dir: Path, database_url: str) -> None:
    """Blocking; call it in a thread or before the event loop starts."""
    with _migration_lock:
        command.upgrade(alembic_config(migrations_dir, database_url), "head")


async def upgrade_to_head_async(migrations_dir: Path, database_url: str) -> None:
    await asyncio.to_thread(upgrade_to_head, migrations_dir, database_url)


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

    async def run_async() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        async with engine.connect() as connection:
            await connection.run_sync(run_sync)
            await connection.commit()
        await engine.dispose()

    asyncio.run(run_async())


def new_revision(migrations_dir: Path, message: str) -> None:
    """Autogenerates the next revision by comparing the models with a scratch SQLite database."""
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite+aiosqlite:///{scratch}/scratch.db"
        config = alembic_config(migrations_dir, url)
        command.upgrade(config, "head")
        heads = ScriptDirectory.from_config(config).get_heads()
        next_id = f"{int(heads[0]) + 1:04d}" if heads else "0001"
        command.revision(config, message=message, autogenerate=True, rev_id=next_id)
