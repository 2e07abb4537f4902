import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from shared.text import Text

Level = Literal["beginner", "intermediate", "advanced"]
CourseStatus = Literal["draft", "published", "archived"]
ProgressStatus = Literal["not_started", "in_progress", "completed"]

SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"


def _not_null(value: object) -> object:
    """A PATCH may leave a field out; it may not null a field that cannot be empty."""
    if value is None:
        raise PydanticCustomError("not_null", "Cannot be null: leave the field out to keep it")
    return value


def _not_a_uuid(slug: str | None) -> str | None:
    """`/courses/{id_or_slug}` must stay unambiguous."""
    if slug is not None:
        try:
            uuid.UUID(slug)
        except ValueError:
            return slug
        raise ValueError("A slug cannot be a UUID")
    return slug


class CourseResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    slug: str
    title: str
    description: str
    category: str
    level: str
    status: str
    duration_weeks: int | None
    instructor_id: uuid.UUID
    is_orphaned: bool
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime


class CourseCreate(BaseModel):
    """A new course starts as a draft; `slug` is made from the title when not given."""

    model_config = ConfigDict(extra="forbid")

    title: Text = Field(min_length=1, max_length=200)
    slug: Text | None = Field(None, min_length=1, max_length=200, pattern=SLUG_PATTERN)
    description: Text = Field("", max_length=20000)
    category: Text = Field("general", min_length=1, max_length=100)
    level: Level
    duration_weeks: int | None = Field(None, ge=1, le=520)

    _slug_not_uuid = field_validator("slug")(_not_a_uuid)


class CourseUpdate(CourseCreate):
    """PUT: the whole course, validated as on create. Omitted optional fields take their
    defaults, except `slug`, `status` and `instructor_id`, which stay as they are."""

    status: CourseStatus | None = None
    instructor_id: uuid.UUID | None = Field(None, description="Admins only: reassigns the course")

    _required = field_validator("status", "instructor_id")(_not_null)


class CoursePatch(BaseModel):
    """PATCH: only the fields given change; `duration_weeks` is the one that null clears."""

    model_config = ConfigDict(extra="forbid")

    title: Text | None = Field(None, min_length=1, max_length=200)
    slug: Text | None = Field(None, min_length=1, max_length=200, pattern=SLUG_PATTERN)
    description: Text | None = Field(None, max_length=20000)
    category: Text | None = Field(None, min_length=1, max_length=100)
    level: Level | None = None
    status: CourseStatus | None = None
    duration_weeks: int | None = Field(None, ge=1, le=520)
    instructor_id: uuid.UUID | None = Field(None, description="Admins only: reassigns the course")

    _slug_not_uuid = field_validator("slug")(_not_a_uuid)
    _required = field_validator(
        "title", "slug", "description", "category", "level", "status", "instructor_id"
    )(_not_null)


class LessonResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    course_id: uuid.UUID
    title: str
    content: str
    position: int
    duration_minutes: int | None
    created_at: datetime
    updated_at: datetime


class LessonCreate(BaseModel):
    """`position` counts from 1; without it the lesson goes last."""

    model_config = ConfigDict(extra="forbid")

    title: Text = Field(min_length=1, max_length=200)
    content: Text = Field("", max_length=200000)
    position: int | None = Field(None, ge=1)
    duration_minutes: int | None = Field(None, ge=1, le=10000)


class LessonUpdate(LessonCreate):
    """PUT: the whole lesson, validated as on create. Omitted optional fields take their
    defaults, except `position`: without it the lesson stays where it is."""


class LessonPatch(BaseModel):
    """PATCH: only the fields given change; `duration_minutes` is the one that null clears."""

    model_config = ConfigDict(extra="forbid")

    title: Text | None = Field(None, min_length=1, max_length=200)
    content: Text | None = Field(None, max_length=200000)
    position: int | None = Field(None, ge=1)
    duration_minutes: int | None = Field(None, ge=1, le=10000)

    _required = field_validator("title", "content", "position")(_not_null)


class CourseSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    slug: str
    title: str
    level: str
    status: str


class EnrollmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    course_id: uuid.UUID


class EnrollmentResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    course_id: uuid.UUID
    course: CourseSummary
    completed_at: datetime | None
    created_at: datetime


class LessonProgressResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    lesson_id: uuid.UUID
    course_id: uuid.UUID
    status: str
    notes: str | None
    completed_at: datetime | None
    updated_at: datetime


class CourseProgressResponse(BaseModel):
    course_id: uuid.UUID
    enrollment_id: uuid.UUID
    total_lessons: int
    completed_lessons: int
    completion_percentage: float
    completed_at: datetime | None
    lessons: list[LessonProgressResponse]


class ProgressUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: ProgressStatus
    notes: Text | None = Field(None, max_length=20000)
