"""`/courses`: the catalogue, and a course's life from draft to published to deleted."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from services.courses.catalogue import CatalogueFilters
from services.courses.models import Course
from services.courses.schemas import (
    CourseCreate,
    CoursePatch,
    CourseResponse,
    CourseSort,
    CourseStatus,
    CourseUpdate,
    Level,
)
from services.courses.service import courses
from shared.deps import CurrentIdentity, OptionalIdentity, PageDep, SessionDep
from shared.pagination import Page, SortOrder
from shared.security import Identity, require_roles
from shared.text import Text

router = APIRouter(prefix="/api/v1/courses", tags=["courses"])

TeacherIdentity = Annotated[Identity, Depends(require_roles("instructor", "admin"))]


@router.get("", response_model=Page[CourseResponse])
async def list_courses(
    page: PageDep,
    viewer: OptionalIdentity,
    session: SessionDep,
    search: Text | None = Query(None, max_length=200, description="Part of a title or description"),
    level: Level | None = None,
    status: CourseStatus | None = Query(None, description="Drafts only for their instructor"),
    category: Text | None = Query(None, max_length=100),
    instructor_id: uuid.UUID | None = None,
    orphaned: bool | None = Query(None, description="Courses whose instructor was deleted"),
    sort: CourseSort = "created_at",
    order: SortOrder = "desc",
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
    rows, pagination = await courses.list_courses(session, filters, viewer, page)
    return {"data": rows, "pagination": pagination}


@router.post("", response_model=CourseResponse, status_code=201)
async def create_course(
    body: CourseCreate, response: Response, identity: TeacherIdentity, session: SessionDep
) -> Course:
    course = await courses.create_course(session, body, identity)
    response.headers["Location"] = f"/api/v1/courses/{course.id}"
    return course


@router.get("/{id_or_slug}", response_model=CourseResponse)
async def get_course(id_or_slug: str, viewer: OptionalIdentity, session: SessionDep) -> Course:
    return await courses.get_course(session, id_or_slug, viewer)


@router.put("/{id_or_slug}", response_model=CourseResponse)
async def replace_course(
    id_or_slug: str, body: CourseUpdate, identity: CurrentIdentity, session: SessionDep
) -> Course:
    return await courses.update_course(session, id_or_slug, body, identity, replace=True)


@router.patch("/{id_or_slug}", response_model=CourseResponse)
async def update_course(
    id_or_slug: str, body: CoursePatch, identity: CurrentIdentity, session: SessionDep
) -> Course:
    return await courses.update_course(session, id_or_slug, body, identity, replace=False)


@router.post("/{id_or_slug}/publish", response_model=CourseResponse)
async def publish_course(id_or_slug: str, identity: CurrentIdentity, session: SessionDep) -> Course:
    return await courses.publish_course(session, id_or_slug, identity)


@router.delete("/{id_or_slug}", status_code=204)
async def delete_course(
    id_or_slug: str, identity: CurrentIdentity, session: SessionDep
) -> Response:
    await courses.delete_course(session, id_or_slug, identity)
    return Response(status_code=204)
