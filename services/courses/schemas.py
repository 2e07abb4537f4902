import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from shared.fields import Integer, Omittable
from shared.text import JsonSchemaPattern, Text

Level = Literal["beginner", "intermediate", "advanced"]
CourseStatus = Literal["draft", "published", "archived"]
ProgressStatus = Literal["not_started", "in_progress", "completed"]
# The fields the catalogue sorts by (catalogue.SORTABLE).
CourseSort = Literal["created_at", "published_at", "title", "duration_weeks"]

SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
# As documented: SLUG_PATTERN, and not 32 hex digits (with hyphens or not), which is a UUID.
SLUG_DOCUMENTED = r"^(?!(?:[0-9a-f]-?){31}[0-9a-f]$)[a-z0-9]+(?:-[a-z0-9]+)*$"


def _not_a_uuid(slug: str) -> str:
    """`/courses/{id_or_slug}` must stay unambiguous."""
    try:
        uuid.UUID(slug)
    except ValueError:
        return slug
    raise ValueError("A slug cannot be a UUID")


Slug = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=SLUG_PATTERN),
    AfterValidator(_not_a_uuid),
    JsonSchemaPattern(SLUG_DOCUMENTED, replace=True),
]


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
    slug: Slug | None = None
    description: Text = Field("", max_length=20000)
    category: Text = Field("general", min_length=1, max_length=100)
    level: Level
    duration_weeks: Integer | None = Field(None, ge=1, le=520)


class CourseUpdate(CourseCreate):
    """PUT: the whole course, validated as on create. Omitted optional fields take their
    defaults, except `slug`, `status` and `instructor_id`, which stay as they are."""

    status: Omittable[CourseStatus] = None
    instructor_id: Omittable[uuid.UUID] = Field(
        None, description="Admins only: reassigns the course"
    )


class CoursePatch(BaseModel):
    """PATCH: only the fields given change; `duration_weeks` is the one that null clears."""

    model_config = ConfigDict(extra="forbid")

    title: Omittable[Text] = Field(None, min_length=1, max_length=200)
    slug: Omittable[Slug] = None
    description: Omittable[Text] = Field(None, max_length=20000)
    category: Omittable[Text] = Field(None, min_length=1, max_length=100)
    level: Omittable[Level] = None
    status: Omittable[CourseStatus] = None
    duration_weeks: Integer | None = Field(None, ge=1, le=520)
    instructor_id: Omittable[uuid.UUID] = Field(
        None, description="Admins only: reassigns the course"
    )


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
    position: Integer | None = Field(None, ge=1)
    duration_minutes: Integer | None = Field(None, ge=1, le=10000)


class LessonUpdate(LessonCreate):
    """PUT: the whole lesson, validated as on create. Omitted optional fields take their
    defaults, except `position`: without it the lesson stays where it is."""


class LessonPatch(BaseModel):
    """PATCH: only the fields given change; `duration_minutes` is the one that null clears."""

    model_config = ConfigDict(extra="forbid")

    title: Omittable[Text] = Field(None, min_length=1, max_length=200)
    content: Omittable[Text] = Field(None, max_length=200000)
    position: Omittable[Integer] = Field(None, ge=1)
    duration_minutes: Integer | None = Field(None, ge=1, le=10000)


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
