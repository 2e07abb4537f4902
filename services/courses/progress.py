"""Lesson progress of enrolled users, and when a course counts as completed."""

import uuid
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.courses.events import record_course_completed, record_lesson_completed
from services.courses.models import Enrollment, Lesson, LessonProgress
from shared.db import utcnow


def add_progress_rows(
    session: AsyncSession,
    course_id: uuid.UUID,
    user_ids: Iterable[uuid.UUID],
    lesson_ids: Iterable[uuid.UUID],
) -> None:
    session.add_all(
        LessonProgress(user_id=user_id, course_id=course_id, lesson_id=lesson_id)
        for user_id in user_ids
        for lesson_id in lesson_ids
    )


async def lesson_ids_of(session: AsyncSession, course_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await session.scalars(select(Lesson.id).where(Lesson.course_id == course_id))
    return list(rows)


async def enrolled_user_ids(session: AsyncSession, course_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await session.scalars(
        select(Enrollment.user_id).where(Enrollment.course_id == course_id)
    )
    return list(rows)


async def progress_rows(
    session: AsyncSession, user_id: uuid.UUID, course_id: uuid.UUID
) -> list[LessonProgress]:
    rows = await session.scalars(
        select(LessonProgress)
        .join(Lesson, Lesson.id == LessonProgress.lesson_id)
        .where(LessonProgress.user_id == user_id, LessonProgress.course_id == course_id)
        .order_by(Lesson.position, Lesson.created_at)
    )
    return list(rows)


def completion_percentage(completed: int, total: int) -> float:
    return round(100.0 * completed / total, 1) if total else 0.0


async def set_status(
    session: AsyncSession, progress: LessonProgress, enrollment: Enrollment, status: str
) -> None:
    """Records `lesson.completed` on the move to completed, and `course.completed` once, when
    the enrollment's last open lesson closes. The caller holds the enrollment's row lock."""
    if status == progress.status:
        return
    progress.status = status
    if status != "completed":
        progress.completed_at = None
        return
    progress.completed_at = utcnow()
    record_lesson_completed(session, progress)
    await session.flush()
    if enrollment.completed_at is not None:
        return
    open_lessons = await session.scalar(
        select(func.count())
        .select_from(LessonProgress)
        .where(
            LessonProgress.user_id == enrollment.user_id,
            LessonProgress.course_id == enrollment.course_id,
            LessonProgress.status != "completed",
        )
    )
    if open_lessons == 0:
        enrollment.completed_at = utcnow()
        record_course_completed(session, enrollment)
