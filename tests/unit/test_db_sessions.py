"""Sessions of `shared.db`: reads outside a transaction that refuse to write, and pooled
connections that the server closed replaced before anyone uses them, kept once opened, and
handed out first come, first served (`shared.db_pool`)."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy.exc
from sqlalchemy import String, event, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import QueuePool

from shared import db as shared_db
from shared.db import Database, ReadOnlySessionError, new_metadata
from tests.conftest import POSTGRES
from tests.databases import scratch_database_url


class Base(DeclarativeBase):
    metadata = new_metadata()


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    text: Mapped[str] = mapped_column(String(100))


@contextlib.asynccontextmanager
async def scratch_database(kind: str, directory: Path) -> AsyncIterator[Database]:
    async with scratch_database_url(kind, directory, "db_sessions") as url:
        database = Database(url)
        async with database.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        try:
            yield database
        finally:
            await database.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with scratch_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
async def postgresql(tmp_path: Path) -> AsyncIterator[Database]:
    """What only a server shows: SQLite's driver opens no transaction for a read anyway,
    and there is no server to close its connections."""
    async with scratch_database("postgresql", tmp_path) as database:
        yield database


async def test_a_read_sees_what_was_committed_and_cannot_write(database: Database) -> None:
    note_id = str(uuid.uuid4())
    async with database.unit_of_work() as session:
        session.add(Note(id=note_id, text="kept"))
    async with database.reading() as session:
        note = await session.get(Note, note_id)
        assert note is not None
        assert note.text == "kept"
        note.text = "changed"
        with pytest.raises(ReadOnlySessionError):
            await session.flush()
    async with database.reading() as session:
        session.add(Note(id=str(uuid.uuid4()), text="new"))
        with pytest.raises(ReadOnlySessionError):
            await session.flush()
    async with database.reading() as session:
        assert (await session.scalars(select(Note.text))).all() == ["kept"]


async def test_a_postgresql_read_opens_no_transaction(postgresql: Database) -> None:
    database = postgresql
    async with database.reading() as session:
        # Outside a transaction each statement is its own: the two clocks differ.
        first = (await session.execute(text("SELECT now()"))).scalar_one()
        second = (await session.execute(text("SELECT now()"))).scalar_one()
        assert first != second
    async with database.unit_of_work() as session:
        first = (await session.execute(text("SELECT now()"))).scalar_one()
        second = (await session.execute(text("SELECT now()"))).scalar_one()
        assert first == second


async def test_an_idle_connection_the_server_closed_is_replaced_unseen(
    postgresql: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = postgresql
    async with database.reading() as session:
        pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    other = await asyncpg.connect(host=POSTGRES[0], port=POSTGRES[1], user="postgres")
    try:
        assert await other.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await other.close()
    # As if the pooled connection had been idle past the limit.
    monkeypatch.setattr(shared_db, "PING_AFTER_IDLE_SECONDS", 0.0)
    async with database.reading() as session:
        assert (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pid


async def test_connections_opened_at_a_busy_moment_are_kept_for_the_next(
    postgresql: Database,
) -> None:
    database = postgresql

    async def backend_of_a_read_held_open(ready: asyncio.Event, release: asyncio.Event) -> int:
        async with database.reading() as session:
            pid: int = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            ready.set()
            await release.wait()
            return pid

    async def busy_moment() -> set[int]:
        release = asyncio.Event()
        readies = [asyncio.Event() for _ in range(shared_db.POOL_SIZE)]
        reads = [
            asyncio.create_task(backend_of_a_read_held_open(ready, release)) for ready in readies
        ]
        for ready in readies:
            await ready.wait()
        release.set()
        return set(await asyncio.gather(*reads))

    first = await busy_moment()
    assert len(first) == shared_db.POOL_SIZE
    # An overflow connection would have been closed on its return, and replaced now by a
    # new backend.
    assert await busy_moment() == first


async def hold_every_connection(
    database: Database, releases: list[asyncio.Event]
) -> list[asyncio.Task[None]]:
    """Reads that take every pooled connection, each kept until its event is set."""

    async def held(ready: asyncio.Event, release: asyncio.Event) -> None:
        async with database.reading() as session:
            await session.execute(text("SELECT 1"))
            ready.set()
            await release.wait()

    readies = [asyncio.Event() for _ in releases]
    holders = [asyncio.create_task(held(*events)) for events in zip(readies, releases, strict=True)]
    for ready in readies:
        await ready.wait()
    return holders


async def test_a_connection_handed_back_goes_to_the_request_that_waits_not_a_newcomer(
    postgresql: Database,
) -> None:
    """A request that asks for a connection in the very moment one comes back, before the
    one already waiting has run again, gets in line behind it."""
    database = postgresql
    pool = database.autocommit_engine.sync_engine.pool  # the reads'
    releases = [asyncio.Event() for _ in range(shared_db.POOL_SIZE)]
    order: list[str] = []
    newcomers: list[asyncio.Task[None]] = []

    async def read(name: str) -> None:
        async with database.reading() as session:
            await session.execute(text("SELECT 1"))
            order.append(name)

    def a_newcomer_arrives(*_: object) -> None:
        # Runs as the connection goes back, so the newcomer's first step comes before the
        # waiting request's next one.
        newcomers.append(asyncio.get_running_loop().create_task(read("newcomer")))

    holders = await hold_every_connection(database, releases)
    waiting = asyncio.create_task(read("waiting"))
    for _ in range(3):
        await asyncio.sleep(0)
    event.listen(pool, "checkin", a_newcomer_arrives, once=True)
    releases[0].set()
    await waiting
    for release in releases:
        release.set()
    await asyncio.gather(*holders, *newcomers)
    assert order == ["waiting", "newcomer"]


async def test_connections_are_handed_out_in_the_order_they_were_asked_for(
    postgresql: Database,
) -> None:
    database = postgresql
    release = asyncio.Event()
    order: list[int] = []

    async def in_line(number: int) -> None:
        async with database.reading() as session:
            order.append(number)
            await session.execute(text("SELECT 1"))

    holders = await hold_every_connection(database, [release] * shared_db.POOL_SIZE)
    waiting = []
    for number in range(3 * shared_db.POOL_SIZE):
        waiting.append(asyncio.create_task(in_line(number)))
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*holders, *waiting)
    assert order == list(range(3 * shared_db.POOL_SIZE))


async def test_a_waiter_that_times_out_or_is_cancelled_loses_no_connection(
    postgresql: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = postgresql
    pool = database.autocommit_engine.sync_engine.pool  # the reads'
    assert isinstance(pool, QueuePool)
    monkeypatch.setattr(pool, "_timeout", 0.05)
    releases = [asyncio.Event() for _ in range(shared_db.POOL_SIZE)]

    async def read() -> int:
        async with database.reading() as session:
            return int((await session.execute(text("SELECT 1"))).scalar_one())

    holders = await hold_every_connection(database, releases)
    with pytest.raises(sqlalchemy.exc.TimeoutError, match="QueuePool limit"):
        await read()
    cancelled_while_waiting = asyncio.create_task(read())
    await asyncio.sleep(0.01)
    cancelled_while_waiting.cancel()
    # Handed the connection that comes back, then cancelled before it runs again.
    cancelled_when_served = asyncio.create_task(read())
    await asyncio.sleep(0.01)
    event.listen(
        pool,
        "checkin",
        lambda *_: asyncio.get_running_loop().call_soon(cancelled_when_served.cancel),
        once=True,
    )
    for release in releases:
        release.set()
    await asyncio.gather(*holders)
    for task in (cancelled_while_waiting, cancelled_when_served):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert pool.checkedout() == 0
    reads = 2 * shared_db.POOL_SIZE
    assert await asyncio.gather(*(read() for _ in range(reads))) == [1] * reads
    assert pool.checkedout() == 0
    assert pool.checkedin() == shared_db.POOL_SIZE
