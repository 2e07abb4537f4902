"""Lesson progress of enrolled users, and when a course counts as completed."""

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.courses.events import record_course_completed, record_lesson_completed
from services.courses.models import Enrollment, Lesson, LessonProgress
from services.courses.schemas import ProgressUpdate
from shared.db import begin_writing, utcnow
from shared.errors import NotFound
from shared.security import Identity


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


async def lock_enrollments(
    session: AsyncSession, course_id: uuid.UUID, user_id: uuid.UUID | None = None
) -> list[Enrollment]:
    """The course's enrollments (or one user's), row-locked until the transaction ends, in
    one order so that concurrent lockers cannot deadlock."""
    query = select(Enrollment).where(Enrollment.course_id == course_id)
    if user_id is not None:
        query = query.where(Enrollment.user_id == user_id)
    rows = await session.scalars(query.order_by(Enrollment.id).with_for_update())
    return list(rows)


async def recompute_completion(
    session: AsyncSession, enrollments: Sequence[Enrollment], *, lesson_added: bool = False
) -> None:
    """The one rule for `Enrollment.completed_at`, run after anything that changes an
    enrollment's lessons or their progress. The caller holds the enrollments' row locks.

    - An enrollment with lessons, none of them open, is complete: `completed_at` is set and
      `course.completed` recorded. One already complete stays as it is, so the event is
      recorded once per completion.
    - A lesson added to the course is open for every enrollment: a completed one opens
      again (`completed_at` cleared) and completes anew, announced again, when the student
      has closed it too.
    - Nothing else reopens a completion: a student moving a lesson of theirs back to
      in progress, or an instructor deleting a lesson, leaves a completed course completed.
    """
    if not enrollments:
        return
    await session.flush()
    course_id = enrollments[0].course_id
    open_lesson = case((LessonProgress.status != "completed", 1), else_=0)
    query = (
        select(LessonProgress.user_id, func.count(), func.sum(open_lesson))
        .where(LessonProgress.course_id == course_id)
        .group_by(LessonProgress.user_id)
    )
    if len(enrollments) == 1:
        query = query.where(LessonProgress.user_id == enrollments[0].user_id)
    counts = {user_id: (total, open_) for user_id, total, open_ in await session.execute(query)}
    for enrollment in enrollments:
        total, open_lessons = counts.get(enrollment.user_id, (0, 0))
        if open_lessons and lesson_added:
            enrollment.completed_at = None
        elif total and not open_lessons and enrollment.completed_at is None:
            enrollment.completed_at = utcnow()
            record_course_completed(session, enrollment)


async def set_status(
    session: AsyncSession, progress: LessonProgress, enrollment: Enrollment, status: str
) -> None:
    """Records `lesson.completed` on the move to completed, then lets `recompute_completion`
    decide about the course. The caller holds the enrollment's row lock."""
    if status == progress.status:
        return
    progress.status = status
    if status != "completed":
        progress.completed_at = None
        return
    progress.completed_at = utcnow()
    record_lesson_completed(session, progress)
    await recompute_completion(session, [enrollment])


async def load_progress(
    session: AsyncSession, progress_id: uuid.UUID, identity: Identity
) -> LessonProgress:
    """Only one's own progress exists for one: anybody else's is a 404."""
    progress = await session.scalar(
        select(LessonProgress)
        .where(LessonProgress.id == progress_id, LessonProgress.user_id == identity.user_id)
        .execution_options(populate_existing=True)
    )
    if progress is None:
        raise NotFound("Progress not found")
    return progress


async def course_progress(
    session: AsyncSession, course_id: uuid.UUID, identity: Identity
) -> dict[str, Any]:
    """The caller's progress in a course they are enrolled in, lesson by lesson."""
    enrollment = await session.scalar(
        select(Enrollment).where(
            Enrollment.user_id == identity.user_id, Enrollment.course_id == course_id
        )
    )
    if enrollment is None:
        raise NotFound("Not enrolled in this course")
    lessons = await progress_rows(session, identity.user_id, course_id)
    completed = sum(1 for progress in lessons if progress.status == "completed")
    return {
        "course_id": course_id,
        "enrollment_id": enrollment.id,
        "total_lessons": len(lessons),
        "completed_lessons": completed,
        "completion_percentage": completion_percentage(completed, len(lessons)),
        "completed_at": enrollment.completed_at,
        "lessons": lessons,
    }


async def get_progress(
    session: AsyncSession, progress_id: uuid.UUID, identity: Identity
) -> LessonProgress:
    return await load_progress(session, progress_id, identity)


async def update_progress(
    session: AsyncSession, progress_id: uuid.UUID, body: ProgressUpdate, identity: Identity
) -> LessonProgress:
    """A lesson's status and notes; the move to completed may complete the course."""
    await begin_writing(session)
    progress = await load_progress(session, progress_id, identity)
    # One writer per enrollment, so that the last two lessons closing together still
    # yield exactly one `course.completed`.
    enrollments = await lock_enrollments(session, progress.course_id, identity.user_id)
    if not enrollments:
        raise NotFound("Not enrolled in this course")
    # Read again under the lock: the lesson may have been deleted, or the entry changed.
    progress = await load_progress(session, progress_id, identity)
    progress.notes = body.notes
    await set_status(session, progress, enrollments[0], body.status)
    await session.flush()
    return progress
