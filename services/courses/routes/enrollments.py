"""`/enrollments`: the courses a user is enrolled in."""

import uuid
from typing import Any

from fastapi import APIRouter, Query, Response

from services.courses.models import Enrollment
from services.courses.schemas import EnrollmentCreate, EnrollmentResponse
from services.courses.service import enrollments
from shared.deps import CurrentIdentity, PageDep, SessionDep
from shared.pagination import Page

router = APIRouter(prefix="/api/v1/enrollments", tags=["enrollments"])


@router.post("", response_model=EnrollmentResponse, status_code=201)
async def enroll(
    body: EnrollmentCreate, response: Response, identity: CurrentIdentity, session: SessionDep
) -> Enrollment:
    enrollment = await enrollments.enroll(session, body.course_id, identity)
    response.headers["Location"] = f"/api/v1/enrollments/{enrollment.id}"
    return enrollment


@router.get("", response_model=Page[EnrollmentResponse])
async def list_enrollments(
    page: PageDep,
    identity: CurrentIdentity,
    session: SessionDep,
    user_id: uuid.UUID | None = Query(None, description="Admins: another user's enrollments"),
) -> dict[str, Any]:
    rows, pagination = await enrollments.list_enrollments(session, page, identity, user_id)
    return {"data": rows, "pagination": pagination}


@router.get("/{enrollment_id}", response_model=EnrollmentResponse)
async def get_enrollment(
    enrollment_id: uuid.UUID, identity: CurrentIdentity, session: SessionDep
) -> Enrollment:
    return await enrollments.get_enrollment(session, enrollment_id, identity)


@router.delete("/{enrollment_id}", status_code=204)
async def leave_course(
    enrollment_id: uuid.UUID, identity: CurrentIdentity, session: SessionDep
) -> Response:
    await enrollments.leave_course(session, enrollment_id, identity)
    return Response(status_code=204)
