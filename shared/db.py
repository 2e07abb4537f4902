"""A service's database: SQLite when embedded, PostgreSQL in the full stack."""

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, MetaData, TypeDecorator, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext import asyncio as sqlalchemy_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, Session, UOWTransaction, mapped_column
from sqlalchemy.pool import Pool

from shared.db_pool import FairAsyncQueuePool

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on PostgreSQL and SQLite alike (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )


def new_id() -> uuid.UUID:
    return uuid.uuid4()


# A pooled connection left unused this long is pinged before it is handed out again, so
# that one the server closed meanwhile (a restart, a proxy's idle timeout) is replaced
# unseen. Pinging every checkout would cost each request a round trip (three, as the
# driver pings inside a transaction); a connection that breaks while in steady use fails
# its request and makes the pool replace every connection it holds, as any disconnect does.
PING_AFTER_IDLE_SECONDS = 2.0
# Per pool, on PostgreSQL: the most connections open, each opened when first needed and
# then kept. None is opened "beyond the pool" (SQLAlchemy's overflow): an overflow
# connection is closed as soon as it is handed back while the pool is full, so a bursty
# load would open and close them many times a second, each costing PostgreSQL a backend
# process and the driver its type introspection.
POOL_SIZE = 10


class ReadOnlySessionError(RuntimeError):
    """A read-only unit of work (a GET's) was asked to write."""


class Database:
    """Two pools on PostgreSQL: `engine`'s connections run transactions (units of work),
    `autocommit_engine`'s are in autocommit from the moment they connect, so that a read or
    a statement that is a transaction of its own (`reading`, `ping`, the webhook
    dispatcher's batch statements) costs one round trip, without switching a connection's
    isolation level at each checkout. SQLite has one pool: its driver opens no transaction
    for reads anyway."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        parsed = make_url(url)
        kwargs: dict[str, Any] = {"echo": echo}
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(poolclass=FairAsyncQueuePool, pool_size=POOL_SIZE, max_overflow=0)
        self.url = url
        # Looked up at each call: the SQLAlchemy instrumentation (shared.telemetry) wraps it.
        self.engine: AsyncEngine = sqlalchemy_asyncio.create_async_engine(url, **kwargs)
        self.autocommit_engine = self.engine
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            self.autocommit_engine = sqlalchemy_asyncio.create_async_engine(
                url, isolation_level="AUTOCOMMIT", **kwargs
            )
        for pool in [] if self.is_sqlite else self.pools():
            event.listen(pool, "connect", _mark_idle)
            event.listen(pool, "checkin", _mark_idle)
            event.listen(pool, "checkout", _ping_if_idle)
        self.sync_session_class: type[Session] = type("DatabaseSession", (Session,), {})
        self.sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=self.sync_session_class
        )
        # Reads outside an explicit transaction. Under READ COMMITTED every statement
        # already saw its own snapshot, so a read sees nothing it would not have seen in a
        # transaction.
        read_session_class: type[Session] = type(
            "ReadOnlyDatabaseSession", (self.sync_session_class,), {}
        )
        event.listen(read_session_class, "before_flush", _refuse_writes)
        self.read_sessions = async_sessionmaker(
            self.autocommit_engine,
            expire_on_commit=False,
            sync_session_class=read_session_class,
        )

    def pools(self) -> list[Pool]:
        engines = [self.engine]
        if self.autocommit_engine is not self.engine:
            engines.append(self.autocommit_engine)
        return [engine.sync_engine.pool for engine in engines]

    @contextlib.asynccontextmanager
    async def unit_of_work(self, *, write_lock: bool = False) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back when it raises.

        The only place Lyceum commits: requests get it through `SessionDep`, background
        work (consumers, relay, dispatcher, start-up tasks) enters it directly.
        `write_lock` is for a change that reads before it writes and must not interleave
        with another writer (see `begin_writing`)."""
        async with self.sessions() as session:
            try:
                if write_lock:
                    await begin_writing(session)
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session that only reads (a GET's, a HEAD's): no explicit transaction, and a
        flush of any change raises ReadOnlySessionError instead of writing it."""
        async with self.read_sessions() as session:
            yield session

    async def ping(self) -> bool:
        try:
            async with self.autocommit_engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.autocommit_engine is not self.engine:
            await self.autocommit_engine.dispose()


def _mark_idle(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    if time.monotonic() - record.info.get("idle_since", 0.0) < PING_AFTER_IDLE_SECONDS:
        return
    try:
        dbapi_connection.ping()
    except Exception as exc:
        # The pool discards this connection and hands out another.
        raise DisconnectionError(str(exc)) from exc


def _refuse_writes(session: Session, _context: UOWTransaction, _instances: Any) -> None:
    if session.new or session.deleted or any(session.is_modified(row) for row in session.dirty):
        raise ReadOnlySessionError("A read-only request tried to write")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def is_sqlite(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "sqlite"


async def begin_writing(session: AsyncSession) -> None:
    """Makes what the session reads from now on part of one serialised write transaction.

    SQLite has no row locks, and its driver opens a transaction only at the first write,
    so what was read before would be read outside it: taking the database's write lock
    first (`BEGIN IMMEDIATE`) makes the reads and the writes one transaction. PostgreSQL
    needs nothing here: the caller locks the rows it reads (`with_for_update`), which
    SQLite ignores."""
    if is_sqlite(session):
        await session.execute(text("BEGIN IMMEDIATE"))
