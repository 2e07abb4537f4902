"""Enrollments: who may enroll in which course, and leaving it."""

import uuid

from sqlalchemy import delete, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from services.courses.catalogue import visible_to
from services.courses.events import record_enrollment_created
from services.courses.models import Course, Enrollment, LessonProgress
from services.courses.service.progress import add_progress_rows, lesson_ids_of
from shared.db import begin_writing, new_id
from shared.errors import Conflict, NotFound, PermissionDenied
from shared.pagination import PageParams, Pagination, paginate
from shared.security import Identity


async def load_enrollment(
    session: AsyncSession, enrollment_id: uuid.UUID, identity: Identity, *, lock: bool = False
) -> Enrollment:
    """Somebody else's enrollment is not found, unless an admin asks."""
    query = (
        select(Enrollment)
        .options(joinedload(Enrollment.course))
        .where(Enrollment.id == enrollment_id)
    )
    if not identity.is_admin:
        query = query.where(Enrollment.user_id == identity.user_id)
    if lock:
        query = query.with_for_update(of=Enrollment)
    enrollment = await session.scalar(query)
    if enrollment is None:
        raise NotFound("Enrollment not found")
    return enrollment


async def enroll(session: AsyncSession, course_id: uuid.UUID, identity: Identity) -> Enrollment:
    """In a published course the caller can see, once; with a progress row for each of its
    lessons."""
    # A share lock on the course: its lessons cannot change until the progress rows for
    # all of them are written.
    await begin_writing(session)
    course = await session.scalar(
        select(Course)
        .where(Course.id == course_id, visible_to(identity))
        .with_for_update(read=True)
    )
    if course is None:
        raise NotFound("Course not found")
    if course.status != "published":
        raise Conflict("Only published courses accept enrollments")
    already = await session.scalar(
        select(
            exists().where(
                Enrollment.user_id == identity.user_id, Enrollment.course_id == course.id
            )
        )
    )
    if already:
        raise Conflict("Already enrolled in this course")
    enrollment = Enrollment(
        id=new_id(), user_id=identity.user_id, course_id=course.id, course=course
    )
    session.add(enrollment)
    add_progress_rows(
        session, course.id, [identity.user_id], await lesson_ids_of(session, course.id)
    )
    record_enrollment_created(session, enrollment)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("Already enrolled in this course") from exc
    return enrollment


async def list_enrollments(
    session: AsyncSession, page: PageParams, identity: Identity, user_id: uuid.UUID | None
) -> tuple[list[Enrollment], Pagination]:
    """The caller's own; an admin may ask for another user's."""
    if user_id is not None and user_id != identity.user_id and not identity.is_admin:
        raise PermissionDenied("Only admins can list another user's enrollments")
    query = (
        select(Enrollment)
        .options(joinedload(Enrollment.course))
        .where(Enrollment.user_id == (user_id or identity.user_id))
        .order_by(Enrollment.created_at.desc(), Enrollment.id)
    )
    return await paginate(session, query, page)


async def get_enrollment(
    session: AsyncSession, enrollment_id: uuid.UUID, identity: Identity
) -> Enrollment:
    return await load_enrollment(session, enrollment_id, identity)


async def leave_course(session: AsyncSession, enrollment_id: uuid.UUID, identity: Identity) -> None:
    """The enrollment goes, and the progress made in the course with it."""
    # Locked first, so that a lesson added meanwhile cannot leave a progress row behind.
    await begin_writing(session)
    enrollment = await load_enrollment(session, enrollment_id, identity, lock=True)
    await session.execute(
        delete(LessonProgress).where(
            LessonProgress.user_id == enrollment.user_id,
            LessonProgress.course_id == enrollment.course_id,
        )
    )
    await session.delete(enrollment)
    await session.flush()
