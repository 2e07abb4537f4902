"""Migrations are a deploy step: `python -m services.<name> migrate` (and the launcher, for
every service) brings a database to head; on PostgreSQL replicas migrating at once take
turns on an advisory lock."""

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from launcher.migrations import embedded_database_url, migrate_embedded
from shared.cli import main
from shared.migrations import alembic_config
from shared.registry import AUTH, SERVICES, USERS, Service
from shared.testing import eventually
from tests.conftest import POSTGRES, LogLines, require_dependencies


def head(entry: Service) -> str:
    url = "sqlite+aiosqlite://"
    heads = ScriptDirectory.from_config(alembic_config(entry.migrations_dir, url)).get_heads()
    assert len(heads) == 1
    return heads[0]


async def revision(url: str) -> str | None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            version: str | None = await connection.scalar(
                text("SELECT version_num FROM alembic_version")
            )
            return version
    finally:
        await engine.dispose()


async def test_the_migrate_command_brings_a_new_database_to_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_lines: LogLines
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/not-there-yet/users.db"
    monkeypatch.setenv("DATABASE_URL", url)
    await asyncio.to_thread(main, USERS, ["migrate"])
    assert await revision(url) == head(USERS)
    assert any(line["event"] == "database_migrated" for line in log_lines.read())
    await asyncio.to_thread(main, USERS, ["migrate"])  # a second time: nothing to do
    assert await revision(url) == head(USERS)


async def test_rotate_key_still_migrates_then_rotates(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    log_lines: LogLines,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from services.auth.__main__ import COMMANDS

    url = f"sqlite+aiosqlite:///{tmp_path}/auth.db"
    monkeypatch.setenv("DATABASE_URL", url)
    await asyncio.to_thread(main, AUTH, ["rotate-key"], COMMANDS)
    assert "new signing key: " in capsys.readouterr().out
    assert await revision(url) == head(AUTH)


async def test_the_launcher_migrates_every_service_of_the_embedded_mode(tmp_path: Path) -> None:
    await migrate_embedded(tmp_path)
    for entry in SERVICES:
        assert await revision(embedded_database_url(tmp_path, entry)) == head(entry)


@pytest.fixture
async def scratch_database() -> AsyncIterator[str]:
    require_dependencies("PostgreSQL")
    name = f"lyceum_test_migrate_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(host=POSTGRES[0], port=POSTGRES[1], user="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_on_postgresql_a_migration_waits_for_the_one_under_way(
    scratch_database: str,
) -> None:
    """Another replica holds the service's migration lock: `migrate` waits for it (and
    touches nothing meanwhile), then finds its way to head once the lock is released."""
    url = f"postgresql+asyncpg://postgres@{POSTGRES[0]}:{POSTGRES[1]}/{scratch_database}"
    holder = await asyncpg.connect(
        host=POSTGRES[0], port=POSTGRES[1], user="postgres", database=scratch_database
    )
    process: asyncio.subprocess.Process | None = None
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", USERS.migration_lock_key)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            USERS.package,
            "migrate",
            env={**os.environ, "DATABASE_URL": url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )

        async def waiting_for_the_lock() -> bool:
            assert process is not None
            assert process.returncode is None, "migrate exited while the lock was held"
            waiting = await holder.fetchval(
                "SELECT count(*) FROM pg_locks JOIN pg_database d ON d.oid = pg_locks.database"
                " WHERE locktype = 'advisory' AND NOT granted AND d.datname = $1",
                scratch_database,
            )
            return bool(waiting)

        await eventually(waiting_for_the_lock, within_seconds=30)
        tables = await holder.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        assert tables == 0, "the waiting migration changed the schema"

        await holder.execute("SELECT pg_advisory_unlock($1)", USERS.migration_lock_key)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, output.decode()
        assert await revision(url) == head(USERS)
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        await holder.close()
