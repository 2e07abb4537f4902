"""`/progress`: how far a user is in each of their courses, lesson by lesson."""

import uuid
from typing import Any

from fastapi import APIRouter, Query

from services.courses.models import LessonProgress
from services.courses.schemas import CourseProgressResponse, LessonProgressResponse, ProgressUpdate
from services.courses.service import progress
from shared.deps import CurrentIdentity, SessionDep

router = APIRouter(prefix="/api/v1/progress", tags=["progress"])


@router.get("", response_model=CourseProgressResponse)
async def course_progress(
    identity: CurrentIdentity,
    session: SessionDep,
    course_id: uuid.UUID = Query(description="A course the current user is enrolled in"),
) -> dict[str, Any]:
    return await progress.course_progress(session, course_id, identity)


@router.get("/{progress_id}", response_model=LessonProgressResponse)
async def get_progress(
    progress_id: uuid.UUID, identity: CurrentIdentity, session: SessionDep
) -> LessonProgress:
    return await progress.get_progress(session, progress_id, identity)


@router.put("/{progress_id}", response_model=LessonProgressResponse)
async def update_progress(
    progress_id: uuid.UUID, body: ProgressUpdate, identity: CurrentIdentity, session: SessionDep
) -> LessonProgress:
    return await progress.update_progress(session, progress_id, body, identity)
