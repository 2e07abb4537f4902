"""A scratch database for a test (a SQLite file in the test's directory, or a PostgreSQL
database of its own on this machine's server, dropped afterwards) and its migrations."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from shared.migrations import alembic_config
from shared.registry import Service
from tests.conftest import POSTGRES, require_dependencies


@contextlib.asynccontextmanager
async def scratch_database_url(kind: str, directory: Path, tag: str) -> AsyncIterator[str]:
    """`kind` is `sqlite` or `postgresql`; `tag` names the database (`lyceum_test_<tag>_…`)."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{directory / f'{tag}.db'}"
        return
    require_dependencies("PostgreSQL")
    name = f"lyceum_test_{tag}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(host=POSTGRES[0], port=POSTGRES[1], user="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+asyncpg://postgres@{POSTGRES[0]}:{POSTGRES[1]}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def migrate(service: Service, url: str, revision: str, *, down: bool = False) -> None:
    """Upgrades (or downgrades) the service's schema at `url` to `revision`."""
    config = alembic_config(service.migrations_dir, url)
    step = command.downgrade if down else command.upgrade
    await asyncio.to_thread(step, config, revision)


def schema_differences(connection: Connection, metadata: MetaData) -> list[object]:
    """What the models declare and the migrated schema lacks (or has besides)."""
    return list(compare_metadata(MigrationContext.configure(connection), metadata))
