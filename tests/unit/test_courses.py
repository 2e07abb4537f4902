"""The courses service's own logic on a real SQLite database built by its migration: who sees
which course, how search treats its input, completion, and `user.deleted`."""

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import State

from services.courses.catalogue import CatalogueFilters, catalogue_query
from services.courses.events import handlers
from services.courses.models import (
    Course,
    Enrollment,
    Lesson,
    LessonProgress,
    OutboxEvent,
    ProcessedEvent,
)
from services.courses.progress import add_progress_rows, completion_percentage, set_status
from services.courses.routes import slugify
from shared.db import Database, new_id
from shared.errors import ValidationFailed
from shared.events.cloudevents import CloudEvent
from shared.events.consumer import EventConsumer
from shared.migrations import upgrade_to_head
from shared.pagination import PageParams, paginate
from shared.security import Identity

MIGRATIONS = Path(__file__).parents[2] / "services" / "courses" / "migrations"
INSTRUCTOR = uuid.uuid4()


def identity(*roles: str, user_id: uuid.UUID | None = None) -> Identity:
    return Identity(user_id=user_id or uuid.uuid4(), roles=roles, jti="j", expires_at=0)


@pytest.fixture
async def database(tmp_path: Path) -> Database:
    url = f"sqlite+aiosqlite:///{tmp_path}/courses.db"
    await asyncio.to_thread(upgrade_to_head, MIGRATIONS, url)
    return Database(url)


def course(
    title: str,
    status: str = "published",
    level: str = "beginner",
    description: str = "",
    instructor_id: uuid.UUID = INSTRUCTOR,
) -> Course:
    return Course(
        id=new_id(),
        slug=slugify(title) + "-" + uuid.uuid4().hex[:6],
        title=title,
        description=description,
        category="programming",
        level=level,
        status=status,
        instructor_id=instructor_id,
        is_orphaned=False,
    )


async def titles(
    session: AsyncSession, filters: CatalogueFilters, viewer: Identity | None
) -> list[str]:
    rows, _ = await paginate(session, catalogue_query(filters, viewer), PageParams(1, 100))
    return [row.title for row in rows]


async def test_the_migration_creates_the_catalogue_indexes(database: Database) -> None:
    async with database.engine.connect() as connection:
        names = await connection.run_sync(
            lambda sync: {index["name"] for index in inspect(sync).get_indexes("courses")}
        )
    assert {
        "ix_courses_status_created_at",
        "ix_courses_status_level_created_at",
        "ix_courses_status_category_created_at",
        "ix_courses_status_title",
        "ix_courses_instructor_id",
    } <= names


async def test_drafts_are_seen_by_their_instructor_and_admins_only(database: Database) -> None:
    async with database.sessions() as session:
        session.add_all([course("Published"), course("Draft", status="draft")])
        session.add(course("Someone else's draft", status="draft", instructor_id=uuid.uuid4()))
        await session.commit()
        by_title = CatalogueFilters(sort="title", order="asc")
        assert await titles(session, by_title, None) == ["Published"]
        assert await titles(session, by_title, identity("student")) == ["Published"]
        own = identity("instructor", user_id=INSTRUCTOR)
        assert await titles(session, by_title, own) == ["Draft", "Published"]
        assert await titles(session, by_title, identity("admin")) == [
            "Draft",
            "Published",
            "Someone else's draft",
        ]


async def test_search_is_case_insensitive_and_takes_wildcards_literally(
    database: Database,
) -> None:
    async with database.sessions() as session:
        session.add_all(
            [
                course("Python at 100% speed"),
                course("Python at 1000 speed"),
                course("snake_case style"),
                course("snakeXcase style"),
                course("Other", description="all about PYTHON"),
            ]
        )
        await session.commit()
        by_title = CatalogueFilters(sort="title", order="asc")

        async def search(term: str) -> list[str]:
            return await titles(session, CatalogueFilters(search=term, sort="title"), None)

        assert sorted(await search("python")) == [
            "Other",
            "Python at 100% speed",
            "Python at 1000 speed",
        ]
        assert await search("100%") == ["Python at 100% speed"]
        assert await search("snake_case") == ["snake_case style"]
        assert len(await titles(session, by_title, None)) == 5


async def test_filters_combine_and_unknown_sort_fields_are_refused(database: Database) -> None:
    async with database.sessions() as session:
        session.add_all(
            [
                course("Go basics", level="beginner"),
                course("Go concurrency", level="advanced"),
                course("Rust basics", level="beginner"),
            ]
        )
        await session.commit()
        filters = CatalogueFilters(search="go", level="advanced")
        assert await titles(session, filters, None) == ["Go concurrency"]
    with pytest.raises(ValidationFailed):
        catalogue_query(CatalogueFilters(sort="instructor_id"), None)


def test_slugs_are_made_from_titles() -> None:
    assert slugify("Intro to C++ & Ünïcode!") == "intro-to-c-unicode"
    assert slugify("!!!") == "course"
    assert len(slugify("x" * 500)) <= 180


def test_completion_percentage() -> None:
    assert completion_percentage(0, 0) == 0
    assert completion_percentage(1, 3) == 33.3
    assert completion_percentage(3, 3) == 100


async def test_course_completed_is_recorded_once_per_enrollment(database: Database) -> None:
    student = uuid.uuid4()
    async with database.sessions() as session:
        catalogue_course = course("Two lessons")
        session.add(catalogue_course)
        lessons = [
            Lesson(id=new_id(), course_id=catalogue_course.id, title=f"L{n}", position=n)
            for n in (1, 2)
        ]
        enrollment = Enrollment(id=new_id(), user_id=student, course_id=catalogue_course.id)
        session.add_all([*lessons, enrollment])
        add_progress_rows(
            session, catalogue_course.id, [student], [lesson.id for lesson in lessons]
        )
        await session.commit()
        first, second = (await session.scalars(select(LessonProgress))).all()

        await set_status(session, first, enrollment, "completed")
        await set_status(session, second, enrollment, "completed")
        await set_status(session, second, enrollment, "in_progress")
        await set_status(session, second, enrollment, "completed")
        await session.commit()
        types = Counter(await session.scalars(select(OutboxEvent.type)))
    assert types == {"lesson.completed": 3, "course.completed": 1}
    assert enrollment.completed_at is not None


async def test_user_deleted_removes_learning_and_orphans_taught_courses_once(
    database: Database,
) -> None:
    student, teacher = uuid.uuid4(), uuid.uuid4()
    async with database.sessions() as session:
        taught = course("Taught", instructor_id=teacher)
        session.add(taught)
        lesson = Lesson(id=new_id(), course_id=taught.id, title="L1", position=1)
        session.add_all([lesson, Enrollment(user_id=student, course_id=taught.id)])
        add_progress_rows(session, taught.id, [student], [lesson.id])
        await session.commit()

    consumer = EventConsumer(database, ProcessedEvent, "q", handlers, State())
    for user_id in (student, teacher):
        event = CloudEvent(
            source="lyceum/users",
            type="user.deleted",
            subject=f"users/{user_id}",
            data={"id": str(user_id)},
        )
        await consumer.handle(event, {})
        await consumer.handle(event, {})

    async with database.sessions() as session:
        assert (await session.scalars(select(Enrollment))).all() == []
        assert (await session.scalars(select(LessonProgress))).all() == []
        kept = await session.get(Course, taught.id)
        assert kept is not None
        assert kept.is_orphaned
        updates = (await session.scalars(select(OutboxEvent.type))).all()
    assert updates == ["course.updated"]
