"""What courses publishes (`course.*`, `enrollment.created`, `lesson.completed`) and what it
learns from users (`user.deleted`)."""

import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.courses.models import Course, Enrollment, LessonProgress, OutboxEvent
from shared.events.cloudevents import CloudEvent
from shared.events.consumer import DomainHandler
from shared.events.outbox import Outbox
from shared.service import Collaborators

outbox = Outbox(OutboxEvent, source="lyceum/courses")


def course_data(course: Course) -> dict[str, Any]:
    return {
        "id": str(course.id),
        "slug": course.slug,
        "title": course.title,
        "category": course.category,
        "level": course.level,
        "status": course.status,
        "instructor_id": str(course.instructor_id),
        "is_orphaned": course.is_orphaned,
    }


def record_course_created(session: AsyncSession, course: Course) -> None:
    outbox.add(session, "course.created", f"courses/{course.id}", course_data(course))


def record_course_updated(session: AsyncSession, course: Course, changed: list[str]) -> None:
    data = course_data(course) | {"changed": changed}
    outbox.add(session, "course.updated", f"courses/{course.id}", data)


def record_course_published(session: AsyncSession, course: Course) -> None:
    assert course.published_at is not None
    published_at = course.published_at.isoformat().replace("+00:00", "Z")
    data = course_data(course) | {"published_at": published_at}
    outbox.add(session, "course.published", f"courses/{course.id}", data)


def record_course_deleted(session: AsyncSession, course: Course) -> None:
    data = {"id": str(course.id), "slug": course.slug, "instructor_id": str(course.instructor_id)}
    outbox.add(session, "course.deleted", f"courses/{course.id}", data)


def record_enrollment_created(session: AsyncSession, enrollment: Enrollment) -> None:
    data = {
        "id": str(enrollment.id),
        "user_id": str(enrollment.user_id),
        "course_id": str(enrollment.course_id),
    }
    outbox.add(session, "enrollment.created", f"enrollments/{enrollment.id}", data)


def record_lesson_completed(session: AsyncSession, progress: LessonProgress) -> None:
    data = {
        "user_id": str(progress.user_id),
        "course_id": str(progress.course_id),
        "lesson_id": str(progress.lesson_id),
    }
    outbox.add(session, "lesson.completed", f"lessons/{progress.lesson_id}", data)


def record_course_completed(session: AsyncSession, enrollment: Enrollment) -> None:
    data = {
        "user_id": str(enrollment.user_id),
        "course_id": str(enrollment.course_id),
        "enrollment_id": str(enrollment.id),
    }
    outbox.add(session, "course.completed", f"courses/{enrollment.course_id}", data)


async def on_user_deleted(
    session: AsyncSession, event: CloudEvent, _collaborators: Collaborators[Any]
) -> None:
    """A deleted user's learning record goes; the courses they teach stay, orphaned."""
    user_id = uuid.UUID(event.data["id"])
    # Enrollments first: deleting them waits for a lesson being added, whose progress rows
    # the second delete then sees.
    await session.execute(delete(Enrollment).where(Enrollment.user_id == user_id))
    await session.execute(delete(LessonProgress).where(LessonProgress.user_id == user_id))
    taught = await session.scalars(
        select(Course).where(Course.instructor_id == user_id, Course.is_orphaned.is_(False))
    )
    for course in taught:
        course.is_orphaned = True
        record_course_updated(session, course, ["is_orphaned"])


handlers: dict[str, DomainHandler[Collaborators[Any]]] = {"user.deleted": on_user_deleted}
