"""The one transaction rule: the request's unit of work commits when the handler returns,
before the response goes out, and rolls back when it raises; a unique violation is 409."""

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import Database, new_metadata
from shared.deps import SessionDep
from shared.errors import NotFound, install_error_handlers
from shared.request_id import RequestIdMiddleware


class Base(DeclarativeBase):
    metadata = new_metadata()


class Thing(Base):
    __tablename__ = "things"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/things.db")
    async with database.engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield database
    await database.dispose()


@pytest.fixture
async def client(database: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.state.collaborators = SimpleNamespace(database=database)
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware, service="test")

    @app.post("/things/{name}", status_code=201)
    async def create(name: str, session: SessionDep) -> dict[str, str]:
        session.add(Thing(name=name))
        return {"name": name}

    @app.post("/things/{name}/then-fail")
    async def create_then_fail(name: str, session: SessionDep) -> None:
        session.add(Thing(name=name))
        await session.flush()
        raise NotFound("Nothing here")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def names(database: Database) -> list[str]:
    async with database.sessions() as session:
        return list(await session.scalars(select(Thing.name).order_by(Thing.name)))


async def test_committed_before_the_response(client: httpx.AsyncClient, database: Database) -> None:
    response = await client.post("/things/a")
    assert response.status_code == 201
    assert await names(database) == ["a"]


async def test_rolled_back_when_the_handler_raises(
    client: httpx.AsyncClient, database: Database
) -> None:
    response = await client.post("/things/b/then-fail")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
    assert await names(database) == []


async def test_unique_violation_at_commit_is_409(
    client: httpx.AsyncClient, database: Database
) -> None:
    assert (await client.post("/things/c")).status_code == 201
    response = await client.post("/things/c")
    assert response.status_code == 409
    body = response.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == "CONFLICT"
    assert await names(database) == ["c"]


async def add_then_fail(database: Database, name: str) -> None:
    async with database.unit_of_work(write_lock=True) as session:
        session.add(Thing(name=name))
        await session.flush()
        raise RuntimeError("boom")


async def test_background_unit_of_work(database: Database) -> None:
    async with database.unit_of_work() as session:
        session.add(Thing(name="kept"))
    with pytest.raises(RuntimeError):
        await add_then_fail(database, "dropped")
    assert await names(database) == ["kept"]
