"""`/courses`: the catalogue, and a course's life from draft to published to deleted."""

import re
import unicodedata
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel
from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.courses.catalogue import (
    CatalogueFilters,
    catalogue_query,
    editable_course,
    load_course,
)
from services.courses.events import (
    record_course_created,
    record_course_deleted,
    record_course_published,
    record_course_updated,
)
from services.courses.models import Course, Lesson
from services.courses.progress import lock_enrollments
from services.courses.schemas import (
    CourseCreate,
    CoursePatch,
    CourseResponse,
    CourseStatus,
    CourseUpdate,
    Level,
)
from shared.db import db_session, new_id, utcnow
from shared.errors import Conflict, PermissionDenied
from shared.pagination import Page, PageParams, SortOrder, page_params, paginate
from shared.security import Identity, current_identity, optional_identity, require_roles
from shared.text import Text

router = APIRouter(prefix="/api/v1/courses", tags=["courses"])

require_teacher = require_roles("instructor", "admin")


def slugify(title: str) -> str:
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")
    return slug[:180].strip("-") or "course"


async def slug_taken(session: AsyncSession, slug: str) -> bool:
    return bool(await session.scalar(select(exists().where(Course.slug == slug))))


async def free_slug(session: AsyncSession, title: str) -> str:
    slug = slugify(title)
    if await slug_taken(session, slug) or _is_uuid(slug):
        slug = f"{slug}-{uuid.uuid4().hex[:8]}"
    return slug


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def slug_conflict(slug: str) -> Conflict:
    return Conflict("Slug already taken", details={"field": "slug", "issue": f"'{slug}' is taken"})


async def commit_course(session: AsyncSession, slug: str) -> None:
    """Commits; a slug taken meanwhile by a concurrent request is a 409, not a 500."""
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise slug_conflict(slug) from exc


async def publish(session: AsyncSession, course: Course) -> None:
    has_lessons = await session.scalar(select(exists().where(Lesson.course_id == course.id)))
    if not has_lessons:
        raise Conflict("A course needs at least one lesson to be published")
    course.status = "published"
    course.published_at = course.published_at or utcnow()
    record_course_published(session, course)


async def apply_changes(
    session: AsyncSession, course: Course, changes: BaseModel, identity: Identity, *, replace: bool
) -> Course:
    """PUT (`replace`) and PATCH: the fields given, or with PUT all of them, except that a
    PUT without `slug`, `status` or `instructor_id` keeps them. Reassigning the instructor is
    for admins, and adopts an orphaned course."""
    values: dict[str, Any] = changes.model_dump(exclude_unset=not replace)
    for kept in ("slug", "status", "instructor_id"):
        if values.get(kept) is None:
            values.pop(kept, None)
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
    changed = []
    for field, value in values.items():
        if getattr(course, field) != value:
            setattr(course, field, value)
            changed.append(field)
    publishing = new_status == "published" and course.status != "published"
    if publishing:
        await publish(session, course)
    elif new_status is not None and new_status != course.status:
        course.status = new_status
        changed.append("status")
    if changed:
        record_course_updated(session, course, changed)
    await commit_course(session, course.slug)
    return course


@router.get("", response_model=Page[CourseResponse])
async def list_courses(
    page: PageParams = Depends(page_params),
    search: Text | None = Query(None, max_length=200, description="Part of a title or description"),
    level: Level | None = None,
    status: CourseStatus | None = Query(None, description="Drafts only for their instructor"),
    category: Text | None = Query(None, max_length=100),
    instructor_id: uuid.UUID | None = None,
    orphaned: bool | None = Query(None, description="Courses whose instructor was deleted"),
    sort: str = "created_at",
    order: SortOrder = "desc",
    viewer: Identity | None = Depends(optional_identity),
    session: AsyncSession = Depends(db_session),
) -> dict[str, Any]:
    filters = CatalogueFilters(
        search=search,
        level=level,
        status=status,
        category=category,
        instructor_id=instructor_id,
        orphaned=orphaned,
        sort=sort,
        order=order,
    )
    query = catalogue_query(filters, viewer, dialect=session.get_bind().dialect.name)
    rows, pagination = await paginate(session, query, page)
    return {"data": rows, "pagination": pagination}


@router.post("", response_model=CourseResponse, status_code=201)
async def create_course(
    body: CourseCreate,
    response: Response,
    identity: Identity = Depends(require_teacher),
    session: AsyncSession = Depends(db_session),
) -> Course:
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
    await commit_course(session, slug)
    response.headers["Location"] = f"/api/v1/courses/{course.id}"
    return course


@router.get("/{id_or_slug}", response_model=CourseResponse)
async def get_course(
    id_or_slug: str,
    viewer: Identity | None = Depends(optional_identity),
    session: AsyncSession = Depends(db_session),
) -> Course:
    return await load_course(session, id_or_slug, viewer)


@router.put("/{id_or_slug}", response_model=CourseResponse)
async def replace_course(
    id_or_slug: str,
    body: CourseUpdate,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Course:
    course = await editable_course(session, id_or_slug, identity)
    return await apply_changes(session, course, body, identity, replace=True)


@router.patch("/{id_or_slug}", response_model=CourseResponse)
async def update_course(
    id_or_slug: str,
    body: CoursePatch,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Course:
    course = await editable_course(session, id_or_slug, identity)
    return await apply_changes(session, course, body, identity, replace=False)


@router.post("/{id_or_slug}/publish", response_model=CourseResponse)
async def publish_course(
    id_or_slug: str,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Course:
    course = await editable_course(session, id_or_slug, identity)
    if course.status != "published":
        await publish(session, course)
    await session.commit()
    return course


@router.delete("/{id_or_slug}", status_code=204)
async def delete_course(
    id_or_slug: str,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Response:
    course = await editable_course(session, id_or_slug, identity)
    # The enrollments before the cascade reaches their progress rows: the order in which a
    # student's progress update locks them too, so the two cannot deadlock.
    await lock_enrollments(session, course.id)
    record_course_deleted(session, course)
    await session.delete(course)
    await session.commit()
    return Response(status_code=204)
