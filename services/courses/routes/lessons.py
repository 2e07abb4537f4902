"""`/courses/{id_or_slug}/lessons`: a course's lessons, numbered 1, 2, 3, ... without gaps.

Every change locks the course row first (`editable_course`), so positions are computed and
shifted by one request at a time; the unique `(course_id, position)` constraint backs that
up."""

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.courses.catalogue import editable_course, load_course
from services.courses.models import Course, Lesson
from services.courses.progress import add_progress_rows, lock_enrollments, recompute_completion
from services.courses.schemas import LessonCreate, LessonPatch, LessonResponse, LessonUpdate
from shared.db import db_session, new_id
from shared.errors import Conflict, NotFound
from shared.pagination import Page, PageParams, page_params, paginate
from shared.security import Identity, current_identity, optional_identity

router = APIRouter(prefix="/api/v1/courses", tags=["lessons"])


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


async def apply_changes(
    session: AsyncSession, lesson: Lesson, changes: BaseModel, *, replace: bool
) -> Lesson:
    """PUT (`replace`) and PATCH: the fields given, or with PUT all of them, except that a
    PUT without `position` leaves the lesson where it is."""
    values: dict[str, Any] = changes.model_dump(exclude_unset=not replace)
    position = values.pop("position", None)
    for field, value in values.items():
        setattr(lesson, field, value)
    if position is not None:
        await move_lesson(session, lesson, position)
    await session.commit()
    await session.refresh(lesson)
    return lesson


@router.get("/{id_or_slug}/lessons", response_model=Page[LessonResponse])
async def list_lessons(
    id_or_slug: str,
    page: PageParams = Depends(page_params),
    viewer: Identity | None = Depends(optional_identity),
    session: AsyncSession = Depends(db_session),
) -> dict[str, Any]:
    course = await load_course(session, id_or_slug, viewer)
    query = (
        select(Lesson)
        .where(Lesson.course_id == course.id)
        .order_by(Lesson.position, Lesson.created_at)
    )
    rows, pagination = await paginate(session, query, page)
    return {"data": rows, "pagination": pagination}


@router.post("/{id_or_slug}/lessons", response_model=LessonResponse, status_code=201)
async def create_lesson(
    id_or_slug: str,
    body: LessonCreate,
    response: Response,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Lesson:
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
    await session.commit()
    response.headers["Location"] = f"/api/v1/courses/{course.id}/lessons/{lesson.id}"
    return lesson


@router.get("/{id_or_slug}/lessons/{lesson_id}", response_model=LessonResponse)
async def get_lesson(
    id_or_slug: str,
    lesson_id: uuid.UUID,
    viewer: Identity | None = Depends(optional_identity),
    session: AsyncSession = Depends(db_session),
) -> Lesson:
    course = await load_course(session, id_or_slug, viewer)
    return await load_lesson(session, course, lesson_id)


@router.put("/{id_or_slug}/lessons/{lesson_id}", response_model=LessonResponse)
async def replace_lesson(
    id_or_slug: str,
    lesson_id: uuid.UUID,
    body: LessonUpdate,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Lesson:
    course = await editable_course(session, id_or_slug, identity)
    lesson = await load_lesson(session, course, lesson_id)
    return await apply_changes(session, lesson, body, replace=True)


@router.patch("/{id_or_slug}/lessons/{lesson_id}", response_model=LessonResponse)
async def update_lesson(
    id_or_slug: str,
    lesson_id: uuid.UUID,
    body: LessonPatch,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Lesson:
    course = await editable_course(session, id_or_slug, identity)
    lesson = await load_lesson(session, course, lesson_id)
    return await apply_changes(session, lesson, body, replace=False)


@router.delete("/{id_or_slug}/lessons/{lesson_id}", status_code=204)
async def delete_lesson(
    id_or_slug: str,
    lesson_id: uuid.UUID,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Response:
    """Closes the gap; an enrollment whose only open lesson this was is now complete."""
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
    await session.commit()
    return Response(status_code=204)
