import re
import unicodedata
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from services.courses.catalogue import CatalogueFilters, catalogue_query, course_lookup, visible_to
from services.courses.events import (
    record_course_created,
    record_course_deleted,
    record_course_published,
    record_course_updated,
    record_enrollment_created,
)
from services.courses.models import Course, Enrollment, Lesson, LessonProgress
from services.courses.progress import (
    add_progress_rows,
    completion_percentage,
    enrolled_user_ids,
    lesson_ids_of,
    progress_rows,
    set_status,
)
from services.courses.schemas import (
    CourseCreate,
    CoursePatch,
    CourseProgressResponse,
    CourseResponse,
    CourseStatus,
    EnrollmentCreate,
    EnrollmentResponse,
    LessonCreate,
    LessonPatch,
    LessonProgressResponse,
    LessonResponse,
    Level,
    ProgressUpdate,
)
from shared.db import db_session, new_id, utcnow
from shared.errors import Conflict, NotFound, PermissionDenied
from shared.pagination import Page, PageParams, SortOrder, page_params, paginate
from shared.security import Identity, current_identity, optional_identity, require_roles

courses_router = APIRouter(prefix="/api/v1/courses", tags=["courses"])
enrollments_router = APIRouter(prefix="/api/v1/enrollments", tags=["enrollments"])
progress_router = APIRouter(prefix="/api/v1/progress", tags=["progress"])
routers = [courses_router, enrollments_router, progress_router]

require_teacher = require_roles("instructor", "admin")


# Courses


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


async def load_course(session: AsyncSession, id_or_slug: str, viewer: Identity | None) -> Course:
    course = await session.scalar(
        select(Course).where(course_lookup(id_or_slug), visible_to(viewer))
    )
    if course is None:
        raise NotFound("Course not found")
    return course


async def editable_course(session: AsyncSession, id_or_slug: str, identity: Identity) -> Course:
    course = await load_course(session, id_or_slug, identity)
    if not (identity.is_admin or course.instructor_id == identity.user_id):
        raise PermissionDenied("Only the course's instructor or an admin can change it")
    return course


async def publish(session: AsyncSession, course: Course) -> None:
    has_lessons = await session.scalar(select(exists().where(Lesson.course_id == course.id)))
    if not has_lessons:
        raise Conflict("A course needs at least one lesson to be published")
    course.status = "published"
    course.published_at = course.published_at or utcnow()
    record_course_published(session, course)


@courses_router.get("", response_model=Page[CourseResponse])
async def list_courses(
    page: PageParams = Depends(page_params),
    search: str | None = Query(None, max_length=200, description="Part of a title or description"),
    level: Level | None = None,
    status: CourseStatus | None = Query(None, description="Drafts only for their instructor"),
    category: str | None = Query(None, max_length=100),
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
    rows, pagination = await paginate(session, catalogue_query(filters, viewer), page)
    return {"data": rows, "pagination": pagination}


@courses_router.post("", response_model=CourseResponse, status_code=201)
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


@courses_router.get("/{id_or_slug}", response_model=CourseResponse)
async def get_course(
    id_or_slug: str,
    viewer: Identity | None = Depends(optional_identity),
    session: AsyncSession = Depends(db_session),
) -> Course:
    return await load_course(session, id_or_slug, viewer)


@courses_router.patch("/{id_or_slug}", response_model=CourseResponse)
async def update_course(
    id_or_slug: str,
    body: CoursePatch,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Course:
    course = await editable_course(session, id_or_slug, identity)
    values: dict[str, Any] = body.model_dump(exclude_unset=True)
    new_status = values.pop("status", None)
    if values.get("slug") not in (None, course.slug) and await slug_taken(session, values["slug"]):
        raise slug_conflict(values["slug"])
    changed = []
    for field, value in values.items():
        if value is None and field in ("title", "slug", "description", "category", "level"):
            continue
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
    if changed or publishing:
        await commit_course(session, course.slug)
    return course


@courses_router.post("/{id_or_slug}/publish", response_model=CourseResponse)
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


@courses_router.delete("/{id_or_slug}", status_code=204)
async def delete_course(
    id_or_slug: str,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Response:
    course = await editable_course(session, id_or_slug, identity)
    record_course_deleted(session, course)
    await session.delete(course)
    await session.commit()
    return Response(status_code=204)


# Lessons


async def load_lesson(session: AsyncSession, course: Course, lesson_id: uuid.UUID) -> Lesson:
    lesson = await session.scalar(
        select(Lesson).where(Lesson.id == lesson_id, Lesson.course_id == course.id)
    )
    if lesson is None:
        raise NotFound("Lesson not found")
    return lesson


async def lesson_count(session: AsyncSession, course_id: uuid.UUID) -> int:
    count = await session.scalar(
        select(func.count()).select_from(Lesson).where(Lesson.course_id == course_id)
    )
    return int(count or 0)


async def shift_positions(
    session: AsyncSession, course_id: uuid.UUID, first: int, last: int | None, by: int
) -> None:
    """Moves the lessons at positions first..last (open-ended without `last`) by `by`."""
    query = update(Lesson).where(Lesson.course_id == course_id, Lesson.position >= first)
    if last is not None:
        query = query.where(Lesson.position <= last)
    await session.execute(query.values(position=Lesson.position + by))


@courses_router.get("/{id_or_slug}/lessons", response_model=Page[LessonResponse])
async def list_lessons(
    id_or_slug: str,
    page: PageParams = Depends(page_params),
    viewer: Identity | None = Depends(optional_identity),
    session: AsyncSession = Depends(db_session),
) -> dict[str, Any]:
    course = await load_course(session, id_or_slug, viewer)
    query = (
        select(Lesson)
        .where(Lesson.course_id == course.id)
        .order_by(Lesson.position, Lesson.created_at)
    )
    rows, pagination = await paginate(session, query, page)
    return {"data": rows, "pagination": pagination}


@courses_router.post("/{id_or_slug}/lessons", response_model=LessonResponse, status_code=201)
async def create_lesson(
    id_or_slug: str,
    body: LessonCreate,
    response: Response,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Lesson:
    course = await editable_course(session, id_or_slug, identity)
    last = await lesson_count(session, course.id)
    position = min(body.position or last + 1, last + 1)
    await shift_positions(session, course.id, position, None, +1)
    lesson = Lesson(
        id=new_id(),
        course_id=course.id,
        title=body.title,
        content=body.content,
        position=position,
        duration_minutes=body.duration_minutes,
    )
    session.add(lesson)
    add_progress_rows(session, course.id, await enrolled_user_ids(session, course.id), [lesson.id])
    await session.commit()
    response.headers["Location"] = f"/api/v1/courses/{course.id}/lessons/{lesson.id}"
    return lesson


@courses_router.get("/{id_or_slug}/lessons/{lesson_id}", response_model=LessonResponse)
async def get_lesson(
    id_or_slug: str,
    lesson_id: uuid.UUID,
    viewer: Identity | None = Depends(optional_identity),
    session: AsyncSession = Depends(db_session),
) -> Lesson:
    course = await load_course(session, id_or_slug, viewer)
    return await load_lesson(session, course, lesson_id)


@courses_router.patch("/{id_or_slug}/lessons/{lesson_id}", response_model=LessonResponse)
async def update_lesson(
    id_or_slug: str,
    lesson_id: uuid.UUID,
    body: LessonPatch,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Lesson:
    course = await editable_course(session, id_or_slug, identity)
    lesson = await load_lesson(session, course, lesson_id)
    values: dict[str, Any] = body.model_dump(exclude_unset=True)
    position = values.pop("position", None)
    for field, value in values.items():
        if value is not None or field == "duration_minutes":
            setattr(lesson, field, value)
    if position is not None:
        target = min(position, await lesson_count(session, course.id))
        if target < lesson.position:
            await shift_positions(session, course.id, target, lesson.position - 1, +1)
        elif target > lesson.position:
            await shift_positions(session, course.id, lesson.position + 1, target, -1)
        lesson.position = target
    await session.commit()
    await session.refresh(lesson)
    return lesson


@courses_router.delete("/{id_or_slug}/lessons/{lesson_id}", status_code=204)
async def delete_lesson(
    id_or_slug: str,
    lesson_id: uuid.UUID,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Response:
    course = await editable_course(session, id_or_slug, identity)
    lesson = await load_lesson(session, course, lesson_id)
    await session.delete(lesson)
    await session.flush()
    await shift_positions(session, course.id, lesson.position + 1, None, -1)
    await session.commit()
    return Response(status_code=204)


# Enrollments


async def load_enrollment(
    session: AsyncSession, enrollment_id: uuid.UUID, identity: Identity
) -> Enrollment:
    """Somebody else's enrollment is not found, unless an admin asks."""
    query = (
        select(Enrollment)
        .options(joinedload(Enrollment.course))
        .where(Enrollment.id == enrollment_id)
    )
    if not identity.is_admin:
        query = query.where(Enrollment.user_id == identity.user_id)
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
    course = await session.scalar(
        select(Course).where(Course.id == body.course_id, visible_to(identity))
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
    enrollment = await load_enrollment(session, enrollment_id, identity)
    await session.execute(
        delete(LessonProgress).where(
            LessonProgress.user_id == enrollment.user_id,
            LessonProgress.course_id == enrollment.course_id,
        )
    )
    await session.delete(enrollment)
    await session.commit()
    return Response(status_code=204)


# Progress


async def load_progress(
    session: AsyncSession, progress_id: uuid.UUID, identity: Identity
) -> LessonProgress:
    """Only one's own progress exists for one: anybody else's is a 404."""
    progress = await session.scalar(
        select(LessonProgress).where(
            LessonProgress.id == progress_id, LessonProgress.user_id == identity.user_id
        )
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
    progress = await load_progress(session, progress_id, identity)
    # One writer per enrollment, so that the last two lessons closing together still
    # yield exactly one `course.completed` (SQLite serializes writers anyway).
    enrollment = await session.scalar(
        select(Enrollment)
        .where(Enrollment.user_id == identity.user_id, Enrollment.course_id == progress.course_id)
        .with_for_update()
    )
    assert enrollment is not None
    await session.refresh(progress)
    progress.notes = body.notes
    await set_status(session, progress, enrollment, body.status)
    await session.commit()
    return progress
