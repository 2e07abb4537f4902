"""The courses service's own logic on a real SQLite database built by its migration: who sees
and who may change which course, how search treats its input, completion, lesson positions,
and `user.deleted`."""

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import pytest
from alembic import command
from pydantic import ValidationError
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

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
from services.courses.schemas import CoursePatch, CourseUpdate, LessonPatch
from services.courses.service.courses import may_edit, slugify
from services.courses.service.lessons import move_lesson, shift_positions
from services.courses.service.progress import (
    add_progress_rows,
    completion_percentage,
    lock_enrollments,
    recompute_completion,
    set_status,
)
from services.courses.settings import CoursesSettings
from shared.db import Database, new_id
from shared.errors import ValidationFailed
from shared.events.cloudevents import CloudEvent
from shared.events.consumer import EventConsumer
from shared.migrations import alembic_config, upgrade_to_head
from shared.pagination import PageParams, paginate
from shared.security import Identity
from shared.service import Collaborators

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
    query = catalogue_query(filters, viewer, dialect=session.get_bind().dialect.name)
    rows, _ = await paginate(session, query, PageParams(1, 100))
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


async def test_sqlite_search_index_follows_inserts_updates_and_deletes(
    database: Database,
) -> None:
    async with database.sessions() as session:
        kept = course("Intro to Kubernetes", description='The "quoted" part')
        renamed = course("Practical Rust")
        dropped = course("Kubernetes the hard way")
        session.add_all([kept, renamed, dropped])
        await session.commit()

        async def search(term: str) -> list[str]:
            filters = CatalogueFilters(search=term, sort="title", order="asc")
            return await titles(session, filters, None)

        assert await search("kubernetes") == ["Intro to Kubernetes", "Kubernetes the hard way"]
        assert await search("to kube") == ["Intro to Kubernetes"]
        assert await search('"quoted"') == ["Intro to Kubernetes"]
        renamed.title = "Practical Zig"
        await session.delete(dropped)
        await session.commit()
        assert await search("rust") == []
        assert await search("zig") == ["Practical Zig"]
        assert await search("kubernetes") == ["Intro to Kubernetes"]


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
        catalogue_query(CatalogueFilters(sort="instructor_id"), None, dialect="sqlite")


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

    # The embedded mode's collaborators, on the test's database.
    settings = CoursesSettings(database_url=database.url, amqp_url=None, redis_url=None)
    collaborators = Collaborators(settings)
    consumer = EventConsumer(database, ProcessedEvent, "q", handlers, collaborators)
    try:
        for user_id in (student, teacher):
            event = CloudEvent(
                source="lyceum/users",
                type="user.deleted",
                subject=f"users/{user_id}",
                data={"id": str(user_id)},
            )
            await consumer.handle(event, {})
            await consumer.handle(event, {})
    finally:
        await collaborators.database.dispose()

    async with database.sessions() as session:
        assert (await session.scalars(select(Enrollment))).all() == []
        assert (await session.scalars(select(LessonProgress))).all() == []
        kept = await session.get(Course, taught.id)
        assert kept is not None
        assert kept.is_orphaned
        updates = (await session.scalars(select(OutboxEvent.type))).all()
    assert updates == ["course.updated"]


def test_only_admins_and_the_courses_current_instructor_may_edit_it() -> None:
    taught = course("Taught")
    assert may_edit(identity("instructor", user_id=INSTRUCTOR), taught)
    assert may_edit(identity("admin"), taught)
    assert not may_edit(identity("instructor"), taught)
    assert not may_edit(identity("student", user_id=INSTRUCTOR), taught)


def test_patch_may_leave_fields_out_but_not_null_them_and_put_wants_them_all() -> None:
    assert CoursePatch.model_validate({"duration_weeks": None}).duration_weeks is None
    assert LessonPatch.model_validate({"duration_minutes": None}).duration_minutes is None
    for field in ("title", "slug", "description", "category", "level", "status"):
        with pytest.raises(ValidationError, match=field):
            CoursePatch.model_validate({field: None})
    for field in ("title", "content", "position"):
        with pytest.raises(ValidationError, match=field):
            LessonPatch.model_validate({field: None})
    replacement = CourseUpdate.model_validate({"title": "T", "level": "beginner"})
    assert replacement.model_dump() == {
        "title": "T",
        "slug": None,
        "description": "",
        "category": "general",
        "level": "beginner",
        "duration_weeks": None,
        "status": None,
        "instructor_id": None,
    }
    with pytest.raises(ValidationError, match="title"):
        CourseUpdate.model_validate({"level": "beginner"})


async def enrolled_course(
    session: AsyncSession, students: list[uuid.UUID], lessons: int
) -> tuple[Course, list[Lesson]]:
    taught = course("Enrolled")
    session.add(taught)
    rows = [
        Lesson(id=new_id(), course_id=taught.id, title=f"L{n}", position=n)
        for n in range(1, lessons + 1)
    ]
    session.add_all(rows)
    session.add_all(Enrollment(id=new_id(), user_id=s, course_id=taught.id) for s in students)
    add_progress_rows(session, taught.id, students, [lesson.id for lesson in rows])
    await session.commit()
    return taught, rows


async def complete(session: AsyncSession, user_id: uuid.UUID, lesson: Lesson) -> None:
    [enrollment] = await lock_enrollments(session, lesson.course_id, user_id)
    progress = await session.scalar(
        select(LessonProgress).where(
            LessonProgress.user_id == user_id, LessonProgress.lesson_id == lesson.id
        )
    )
    assert progress is not None
    await set_status(session, progress, enrollment, "completed")


async def outbox_types(session: AsyncSession) -> Counter[str]:
    return Counter(await session.scalars(select(OutboxEvent.type)))


async def test_a_lesson_added_reopens_completed_enrollments_until_it_is_closed(
    database: Database,
) -> None:
    done, halfway = uuid.uuid4(), uuid.uuid4()
    async with database.sessions() as session:
        taught, (first,) = await enrolled_course(session, [done, halfway], lessons=1)
        await complete(session, done, first)
        await session.commit()
        second = Lesson(id=new_id(), course_id=taught.id, title="L2", position=2)
        session.add(second)
        enrollments = await lock_enrollments(session, taught.id)
        add_progress_rows(session, taught.id, [done, halfway], [second.id])
        await recompute_completion(session, enrollments, lesson_added=True)
        await session.commit()
        assert [e.completed_at for e in enrollments] == [None, None]

        await complete(session, done, second)
        await session.commit()
        by_user = {e.user_id: e for e in await lock_enrollments(session, taught.id)}
        assert by_user[done].completed_at is not None
        assert by_user[halfway].completed_at is None
        assert (await outbox_types(session))["course.completed"] == 2


async def test_deleting_the_last_open_lesson_completes_once_and_no_lessons_is_no_completion(
    database: Database,
) -> None:
    student = uuid.uuid4()
    async with database.sessions() as session:
        taught, (first, second) = await enrolled_course(session, [student], lessons=2)
        await complete(session, student, first)
        await session.commit()

        enrollments = await lock_enrollments(session, taught.id)
        await session.delete(second)
        await recompute_completion(session, enrollments)
        await recompute_completion(session, enrollments)
        await session.commit()
        [enrollment] = enrollments
        assert enrollment.completed_at is not None
        assert (await outbox_types(session))["course.completed"] == 1

        # Nothing but an added lesson reopens: deleting the last one leaves it complete ...
        await session.delete(first)
        await recompute_completion(session, enrollments)
        await session.commit()
        assert enrollment.completed_at is not None
        assert (await outbox_types(session))["course.completed"] == 1

    async with database.sessions() as session:
        # ... and an enrollment of a course without lessons never completes.
        empty, _ = await enrolled_course(session, [student], lessons=0)
        enrollments = await lock_enrollments(session, empty.id)
        await recompute_completion(session, enrollments)
        assert enrollments[0].completed_at is None


async def test_lesson_positions_are_unique_and_shift_without_colliding(
    database: Database,
) -> None:
    async with database.sessions() as session:
        taught, lessons = await enrolled_course(session, [], lessons=4)
        await shift_positions(session, taught.id, 2, None, +1)
        session.add(Lesson(id=new_id(), course_id=taught.id, title="New", position=2))
        await session.commit()

        async def order() -> list[tuple[str, int]]:
            rows = await session.execute(
                select(Lesson.title, Lesson.position)
                .where(Lesson.course_id == taught.id)
                .order_by(Lesson.position)
            )
            return [(title, position) for title, position in rows]

        assert await order() == [("L1", 1), ("New", 2), ("L2", 3), ("L3", 4), ("L4", 5)]
        last = lessons[3]
        await move_lesson(session, last, 1)
        await session.commit()
        assert [title for title, _ in await order()] == ["L4", "L1", "New", "L2", "L3"]
        await move_lesson(session, last, 99)
        await session.commit()
        assert await order() == [("L1", 1), ("New", 2), ("L2", 3), ("L3", 4), ("L4", 5)]

        session.add(Lesson(id=new_id(), course_id=taught.id, title="Twin", position=3))
        with pytest.raises(IntegrityError):
            await session.commit()


async def test_the_positions_migration_renumbers_lessons_that_collided(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/old.db"
    await asyncio.to_thread(command.upgrade, alembic_config(MIGRATIONS, url), "0001")
    database = Database(url)
    course_id, other_id = uuid.uuid4().hex, uuid.uuid4().hex
    async with database.engine.begin() as connection:
        for cid in (course_id, other_id):
            await connection.execute(
                text(
                    "INSERT INTO courses (id, slug, title, description, category, level, status,"
                    " instructor_id, is_orphaned, created_at, updated_at) VALUES (:id, :id,"
                    " 'C', '', 'c', 'beginner', 'draft', :id, 0, '2026-01-01', '2026-01-01')"
                ),
                {"id": cid},
            )
        for title, cid, position, created in (
            ("a", course_id, 1, "2026-01-01 00:00:01"),
            ("b", course_id, 2, "2026-01-01 00:00:02"),
            ("c", course_id, 2, "2026-01-01 00:00:03"),
            ("d", course_id, 5, "2026-01-01 00:00:04"),
            ("x", other_id, 3, "2026-01-01 00:00:05"),
        ):
            await connection.execute(
                text(
                    "INSERT INTO lessons (id, course_id, title, content, position, created_at,"
                    " updated_at) VALUES (:id, :cid, :title, '', :position, :created, :created)"
                ),
                {
                    "id": uuid.uuid4().hex,
                    "cid": cid,
                    "title": title,
                    "position": position,
                    "created": created,
                },
            )
    await database.dispose()
    await asyncio.to_thread(upgrade_to_head, MIGRATIONS, url)
    database = Database(url)
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT title, position FROM lessons ORDER BY course_id = :c DESC, position"),
            {"c": course_id},
        )
        assert [tuple(row) for row in rows] == [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("x", 1)]
        constraints = await connection.run_sync(
            lambda sync: inspect(sync).get_unique_constraints("lessons")
        )
    await database.dispose()
    assert {"name": "uq_lessons_course_id_position", "column_names": ["course_id", "position"]} in [
        {"name": c["name"], "column_names": c["column_names"]} for c in constraints
    ]
