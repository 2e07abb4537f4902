"""`/enrollments` and `/progress`: a user's courses and how far they are in each."""

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import delete, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from services.courses.catalogue import begin_writing, visible_to
from services.courses.events import record_enrollment_created
from services.courses.models import Course, Enrollment, LessonProgress
from services.courses.progress import (
    add_progress_rows,
    completion_percentage,
    lesson_ids_of,
    lock_enrollments,
    progress_rows,
    set_status,
)
from services.courses.schemas import (
    CourseProgressResponse,
    EnrollmentCreate,
    EnrollmentResponse,
    LessonProgressResponse,
    ProgressUpdate,
)
from shared.db import db_session, new_id
from shared.errors import Conflict, NotFound, PermissionDenied
from shared.pagination import Page, PageParams, page_params, paginate
from shared.security import Identity, current_identity

enrollments_router = APIRouter(prefix="/api/v1/enrollments", tags=["enrollments"])
progress_router = APIRouter(prefix="/api/v1/progress", tags=["progress"])


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


@enrollments_router.post("", response_model=EnrollmentResponse, status_code=201)
async def enroll(
    body: EnrollmentCreate,
    response: Response,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Enrollment:
    # A share lock on the course: its lessons cannot change until the progress rows for
    # all of them are written.
    await begin_writing(session)
    course = await session.scalar(
        select(Course)
        .where(Course.id == body.course_id, visible_to(identity))
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
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict("Already enrolled in this course") from exc
    response.headers["Location"] = f"/api/v1/enrollments/{enrollment.id}"
    return enrollment


@enrollments_router.get("", response_model=Page[EnrollmentResponse])
async def list_enrollments(
    page: PageParams = Depends(page_params),
    user_id: uuid.UUID | None = Query(None, description="Admins: another user's enrollments"),
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> dict[str, Any]:
    if user_id is not None and user_id != identity.user_id and not identity.is_admin:
        raise PermissionDenied("Only admins can list another user's enrollments")
    query = (
        select(Enrollment)
        .options(joinedload(Enrollment.course))
        .where(Enrollment.user_id == (user_id or identity.user_id))
        .order_by(Enrollment.created_at.desc(), Enrollment.id)
    )
    rows, pagination = await paginate(session, query, page)
    return {"data": rows, "pagination": pagination}


@enrollments_router.get("/{enrollment_id}", response_model=EnrollmentResponse)
async def get_enrollment(
    enrollment_id: uuid.UUID,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Enrollment:
    return await load_enrollment(session, enrollment_id, identity)


@enrollments_router.delete("/{enrollment_id}", status_code=204)
async def leave_course(
    enrollment_id: uuid.UUID,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Response:
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
    await session.commit()
    return Response(status_code=204)


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


@progress_router.get("", response_model=CourseProgressResponse)
async def course_progress(
    course_id: uuid.UUID = Query(description="A course the current user is enrolled in"),
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> dict[str, Any]:
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


@progress_router.get("/{progress_id}", response_model=LessonProgressResponse)
async def get_progress(
    progress_id: uuid.UUID,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> LessonProgress:
    return await load_progress(session, progress_id, identity)


@progress_router.put("/{progress_id}", response_model=LessonProgressResponse)
async def update_progress(
    progress_id: uuid.UUID,
    body: ProgressUpdate,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> LessonProgress:
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
    await session.commit()
    return progress
