"""Courses: who may see and change which, their slugs, and a course's life from draft to
published to deleted."""

import re
import unicodedata
import uuid

from pydantic import BaseModel
from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.courses.catalogue import CatalogueFilters, catalogue_query, course_lookup, visible_to
from services.courses.events import (
    record_course_created,
    record_course_deleted,
    record_course_published,
    record_course_updated,
)
from services.courses.models import Course, Lesson
from services.courses.schemas import CourseCreate
from services.courses.service.progress import lock_enrollments
from shared.db import begin_writing, new_id, utcnow
from shared.errors import Conflict, NotFound, PermissionDenied
from shared.pagination import PageParams, Pagination, paginate
from shared.security import Identity
from shared.updates import assign_changed, requested_values


def slugify(title: str) -> str:
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")
    return slug[:180].strip("-") or "course"


async def slug_taken(session: AsyncSession, slug: str) -> bool:
    return bool(await session.scalar(select(exists().where(Course.slug == slug))))


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def free_slug(session: AsyncSession, title: str) -> str:
    slug = slugify(title)
    if await slug_taken(session, slug) or _is_uuid(slug):
        slug = f"{slug}-{uuid.uuid4().hex[:8]}"
    return slug


def slug_conflict(slug: str) -> Conflict:
    return Conflict("Slug already taken", details={"field": "slug", "issue": f"'{slug}' is taken"})


async def flush_course(session: AsyncSession, slug: str) -> None:
    """Flushes; a slug taken meanwhile by a concurrent request is a 409 naming the slug."""
    try:
        await session.flush()
    except IntegrityError as exc:
        raise slug_conflict(slug) from exc


def may_edit(identity: Identity, course: Course) -> bool:
    """Admins, and the course's instructor while they still hold the instructor role."""
    return identity.is_admin or (
        identity.has_role("instructor") and course.instructor_id == identity.user_id
    )


async def load_course(session: AsyncSession, id_or_slug: str, viewer: Identity | None) -> Course:
    """A course the viewer may not see is not found, so that drafts do not leak."""
    course = await session.scalar(
        select(Course).where(course_lookup(id_or_slug), visible_to(viewer))
    )
    if course is None:
        raise NotFound("Course not found")
    return course


async def editable_course(session: AsyncSession, id_or_slug: str, identity: Identity) -> Course:
    """The course, locked until the request's transaction ends, so that changes to a course
    and its lessons, such as lesson positions, happen one at a time."""
    await begin_writing(session)
    course = await session.scalar(
        select(Course).where(course_lookup(id_or_slug), visible_to(identity)).with_for_update()
    )
    if course is None:
        raise NotFound("Course not found")
    if not may_edit(identity, course):
        raise PermissionDenied("Only the course's instructor or an admin can change it")
    return course


async def list_courses(
    session: AsyncSession, filters: CatalogueFilters, viewer: Identity | None, page: PageParams
) -> tuple[list[Course], Pagination]:
    query = catalogue_query(filters, viewer, dialect=session.get_bind().dialect.name)
    return await paginate(session, query, page)


async def get_course(session: AsyncSession, id_or_slug: str, viewer: Identity | None) -> Course:
    return await load_course(session, id_or_slug, viewer)


async def create_course(session: AsyncSession, body: CourseCreate, identity: Identity) -> Course:
    """A draft of the caller's; its slug is made from the title unless one is given."""
    if body.slug is not None and await slug_taken(session, body.slug):
        raise slug_conflict(body.slug)
    slug = body.slug or await free_slug(session, body.title)
    course = Course(
        id=new_id(),
        slug=slug,
        title=body.title,
        description=body.description,
        category=body.category,
        level=body.level,
        status="draft",
        duration_weeks=body.duration_weeks,
        instructor_id=identity.user_id,
        is_orphaned=False,
    )
    session.add(course)
    record_course_created(session, course)
    await flush_course(session, slug)
    return course


async def publish(session: AsyncSession, course: Course) -> None:
    """A course is published once it has a lesson; `published_at` is the first time."""
    has_lessons = await session.scalar(select(exists().where(Lesson.course_id == course.id)))
    if not has_lessons:
        raise Conflict("A course needs at least one lesson to be published")
    course.status = "published"
    course.published_at = course.published_at or utcnow()
    record_course_published(session, course)


async def update_course(
    session: AsyncSession,
    id_or_slug: str,
    changes: BaseModel,
    identity: Identity,
    *,
    replace: bool,
) -> Course:
    """PUT (`replace`) or PATCH; a PUT without `slug`, `status` or `instructor_id` keeps
    them. Reassigning the instructor is for admins, and adopts an orphaned course. A move to
    published follows the rule of `publish`; `course.updated` names the fields that really
    changed."""
    course = await editable_course(session, id_or_slug, identity)
    values = requested_values(
        changes, replace=replace, kept_unless_given=("slug", "status", "instructor_id")
    )
    if "instructor_id" in values:
        if not identity.is_admin:
            raise PermissionDenied(
                "Only an admin can reassign a course",
                details={"field": "instructor_id", "issue": "admins only"},
            )
        values["is_orphaned"] = False
    new_status = values.pop("status", None)
    if values.get("slug", course.slug) != course.slug and await slug_taken(session, values["slug"]):
        raise slug_conflict(values["slug"])
    changed = assign_changed(course, values)
    if new_status == "published" and course.status != "published":
        await publish(session, course)
    elif new_status is not None and new_status != course.status:
        course.status = new_status
        changed.append("status")
    if changed:
        record_course_updated(session, course, changed)
    await flush_course(session, course.slug)
    return course


async def publish_course(session: AsyncSession, id_or_slug: str, identity: Identity) -> Course:
    """Publishing a published course changes nothing."""
    course = await editable_course(session, id_or_slug, identity)
    if course.status != "published":
        await publish(session, course)
        await session.flush()
    return course


async def delete_course(session: AsyncSession, id_or_slug: str, identity: Identity) -> None:
    course = await editable_course(session, id_or_slug, identity)
    # The enrollments before the cascade reaches their progress rows: the order in which a
    # student's progress update locks them too, so the two cannot deadlock.
    await lock_enrollments(session, course.id)
    record_course_deleted(session, course)
    await session.delete(course)
    await session.flush()
