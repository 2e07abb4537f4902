"""`/courses/{id_or_slug}/lessons`: a course's lessons, numbered 1, 2, 3, ... without gaps."""

import uuid
from typing import Any

from fastapi import APIRouter, Response

from services.courses.models import Lesson
from services.courses.schemas import LessonCreate, LessonPatch, LessonResponse, LessonUpdate
from services.courses.service import lessons
from shared.deps import CurrentIdentity, OptionalIdentity, PageDep, SessionDep
from shared.pagination import Page

router = APIRouter(prefix="/api/v1/courses", tags=["lessons"])


@router.get("/{id_or_slug}/lessons", response_model=Page[LessonResponse])
async def list_lessons(
    id_or_slug: str, page: PageDep, viewer: OptionalIdentity, session: SessionDep
) -> dict[str, Any]:
    rows, pagination = await lessons.list_lessons(session, id_or_slug, viewer, page)
    return {"data": rows, "pagination": pagination}


@router.post("/{id_or_slug}/lessons", response_model=LessonResponse, status_code=201)
async def create_lesson(
    id_or_slug: str,
    body: LessonCreate,
    response: Response,
    identity: CurrentIdentity,
    session: SessionDep,
) -> Lesson:
    lesson = await lessons.create_lesson(session, id_or_slug, body, identity)
    response.headers["Location"] = f"/api/v1/courses/{lesson.course_id}/lessons/{lesson.id}"
    return lesson


@router.get("/{id_or_slug}/lessons/{lesson_id}", response_model=LessonResponse)
async def get_lesson(
    id_or_slug: str, lesson_id: uuid.UUID, viewer: OptionalIdentity, session: SessionDep
) -> Lesson:
    return await lessons.get_lesson(session, id_or_slug, lesson_id, viewer)


@router.put("/{id_or_slug}/lessons/{lesson_id}", response_model=LessonResponse)
async def replace_lesson(
    id_or_slug: str,
    lesson_id: uuid.UUID,
    body: LessonUpdate,
    identity: CurrentIdentity,
    session: SessionDep,
) -> Lesson:
    return await lessons.update_lesson(session, id_or_slug, lesson_id, body, identity, replace=True)


@router.patch("/{id_or_slug}/lessons/{lesson_id}", response_model=LessonResponse)
async def update_lesson(
    id_or_slug: str,
    lesson_id: uuid.UUID,
    body: LessonPatch,
    identity: CurrentIdentity,
    session: SessionDep,
) -> Lesson:
    return await lessons.update_lesson(
        session, id_or_slug, lesson_id, body, identity, replace=False
    )


@router.delete("/{id_or_slug}/lessons/{lesson_id}", status_code=204)
async def delete_lesson(
    id_or_slug: str, lesson_id: uuid.UUID, identity: CurrentIdentity, session: SessionDep
) -> Response:
    """Closes the gap; an enrollment whose only open lesson this was is now complete."""
    await lessons.delete_lesson(session, id_or_slug, lesson_id, identity)
    return Response(status_code=204)
