"""A course's lessons, numbered 1, 2, 3, ... without gaps.

Every change locks the course row first (`editable_course`), so positions are computed and
shifted by one request at a time; the unique `(course_id, position)` constraint backs that
up."""

import uuid

from pydantic import BaseModel
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.courses.models import Course, Lesson
from services.courses.schemas import LessonCreate
from services.courses.service.courses import editable_course, load_course
from services.courses.service.progress import (
    add_progress_rows,
    lock_enrollments,
    recompute_completion,
)
from shared.db import new_id
from shared.errors import Conflict, NotFound
from shared.pagination import PageParams, Pagination, paginate
from shared.security import Identity
from shared.updates import assign_changed, requested_values


async def load_lesson(session: AsyncSession, course: Course, lesson_id: uuid.UUID) -> Lesson:
    lesson = await session.scalar(
        select(Lesson).where(Lesson.id == lesson_id, Lesson.course_id == course.id)
    )
    if lesson is None:
        raise NotFound("Lesson not found")
    return lesson


async def lesson_count(session: AsyncSession, course_id: uuid.UUID) -> int:
    count = await session.scalar(
        select(func.count()).select_from(Lesson).where(Lesson.course_id == course_id)
    )
    return int(count or 0)


async def shift_positions(
    session: AsyncSession, course_id: uuid.UUID, first: int, last: int | None, by: int
) -> None:
    """Moves the lessons at positions first..last (open-ended without `last`) by `by`.

    By way of negative numbers: the unique constraint is checked row by row, so shifting in
    place would collide with the neighbour not yet moved."""
    query = update(Lesson).where(Lesson.course_id == course_id, Lesson.position >= first)
    if last is not None:
        query = query.where(Lesson.position <= last)
    await session.execute(query.values(position=-by - Lesson.position))
    await session.execute(
        update(Lesson)
        .where(Lesson.course_id == course_id, Lesson.position < 0)
        .values(position=0 - Lesson.position)
    )


async def move_lesson(session: AsyncSession, lesson: Lesson, position: int) -> None:
    """To `position` (at most the last one), the lessons in between closing up."""
    target = min(position, await lesson_count(session, lesson.course_id))
    current = lesson.position
    if target == current:
        return
    lesson.position = 0  # out of the way while the others shift
    await session.flush()
    if target < current:
        await shift_positions(session, lesson.course_id, target, current - 1, +1)
    else:
        await shift_positions(session, lesson.course_id, current + 1, target, -1)
    lesson.position = target


async def list_lessons(
    session: AsyncSession, id_or_slug: str, viewer: Identity | None, page: PageParams
) -> tuple[list[Lesson], Pagination]:
    course = await load_course(session, id_or_slug, viewer)
    query = (
        select(Lesson)
        .where(Lesson.course_id == course.id)
        .order_by(Lesson.position, Lesson.created_at)
    )
    return await paginate(session, query, page)


async def get_lesson(
    session: AsyncSession, id_or_slug: str, lesson_id: uuid.UUID, viewer: Identity | None
) -> Lesson:
    course = await load_course(session, id_or_slug, viewer)
    return await load_lesson(session, course, lesson_id)


async def create_lesson(
    session: AsyncSession, id_or_slug: str, body: LessonCreate, identity: Identity
) -> Lesson:
    """At `position` (at most one past the last; last without it), the lessons from there
    on moving down one. A new lesson is open for every enrollment of the course."""
    course = await editable_course(session, id_or_slug, identity)
    enrollments = await lock_enrollments(session, course.id)
    last = await lesson_count(session, course.id)
    position = min(body.position or last + 1, last + 1)
    await shift_positions(session, course.id, position, None, +1)
    lesson = Lesson(
        id=new_id(),
        course_id=course.id,
        title=body.title,
        content=body.content,
        position=position,
        duration_minutes=body.duration_minutes,
    )
    session.add(lesson)
    add_progress_rows(session, course.id, [e.user_id for e in enrollments], [lesson.id])
    await recompute_completion(session, enrollments, lesson_added=True)
    await session.flush()
    return lesson


async def update_lesson(
    session: AsyncSession,
    id_or_slug: str,
    lesson_id: uuid.UUID,
    changes: BaseModel,
    identity: Identity,
    *,
    replace: bool,
) -> Lesson:
    """PUT (`replace`) or PATCH; a PUT without `position` leaves the lesson where it is."""
    course = await editable_course(session, id_or_slug, identity)
    lesson = await load_lesson(session, course, lesson_id)
    values = requested_values(changes, replace=replace, kept_unless_given=("position",))
    position = values.pop("position", None)
    assign_changed(lesson, values)
    if position is not None:
        await move_lesson(session, lesson, position)
    await session.flush()
    await session.refresh(lesson)
    return lesson


async def delete_lesson(
    session: AsyncSession, id_or_slug: str, lesson_id: uuid.UUID, identity: Identity
) -> None:
    """Closes the gap; an enrollment whose only open lesson this was is now complete. A
    published course keeps at least one lesson."""
    course = await editable_course(session, id_or_slug, identity)
    lesson = await load_lesson(session, course, lesson_id)
    if course.status == "published" and await lesson_count(session, course.id) == 1:
        raise Conflict(
            "A published course keeps at least one lesson: add another first, "
            "or move the course back to draft or archived"
        )
    enrollments = await lock_enrollments(session, course.id)
    await session.delete(lesson)
    await session.flush()
    await shift_positions(session, course.id, lesson.position + 1, None, -1)
    await recompute_completion(session, enrollments)
    await session.flush()
