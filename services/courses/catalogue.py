"""Which courses a viewer sees and how one is looked up: the catalogue query that the list
use case and `make bench-courses` both run. Queries only; the rules are in `service/`."""

import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, false, or_, select, text

from services.courses.models import Course
from services.courses.schemas import SLUG_PATTERN
from shared.pagination import SortOrder, order_by
from shared.security import Identity

SORTABLE = {
    "created_at": Course.created_at,
    "published_at": Course.published_at,
    "title": Course.title,
    "duration_weeks": Course.duration_weeks,
}


@dataclass(frozen=True)
class CatalogueFilters:
    search: str | None = None
    level: str | None = None
    status: str | None = None
    category: str | None = None
    instructor_id: uuid.UUID | None = None
    orphaned: bool | None = None
    sort: str = "created_at"
    order: SortOrder = "desc"


def visible_to(viewer: Identity | None) -> ColumnElement[bool]:
    """Everybody sees published courses; instructors also their own; admins all."""
    if viewer is not None and viewer.is_admin:
        return Course.id.is_not(None)
    published = Course.status == "published"
    if viewer is not None and viewer.has_role("instructor"):
        return or_(published, Course.instructor_id == viewer.user_id)
    return published


def like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


SQLITE_INDEXED_SEARCH = text(
    "courses.rowid IN (SELECT rowid FROM courses_search WHERE courses_search MATCH :phrase)"
)


def search_condition(term: str, dialect: str) -> ColumnElement[bool]:
    """A part of the title or the description, case-insensitive, `%` and `_` literal.

    PostgreSQL serves ILIKE from its trigram indexes. SQLite's FTS5 trigram index
    (migration 0003) matches the term as a quoted phrase, which finds substrings of three
    characters or more; a shorter term scans, as there is no trigram in it to look up."""
    if dialect == "sqlite" and len(term) >= 3:
        phrase = '"' + term.replace('"', '""') + '"'
        return SQLITE_INDEXED_SEARCH.bindparams(phrase=phrase)  # type: ignore[return-value]
    pattern = like_pattern(term)
    return or_(
        Course.title.ilike(pattern, escape="\\"),
        Course.description.ilike(pattern, escape="\\"),
    )


def catalogue_query(
    filters: CatalogueFilters, viewer: Identity | None, *, dialect: str
) -> Select[Any]:
    query = select(Course).where(visible_to(viewer))
    if filters.search:
        query = query.where(search_condition(filters.search, dialect))
    if filters.level:
        query = query.where(Course.level == filters.level)
    if filters.status:
        query = query.where(Course.status == filters.status)
    if filters.category:
        query = query.where(Course.category == filters.category)
    if filters.instructor_id:
        query = query.where(Course.instructor_id == filters.instructor_id)
    if filters.orphaned is not None:
        query = query.where(Course.is_orphaned.is_(filters.orphaned))
    return query.order_by(order_by(SORTABLE, filters.sort, filters.order), Course.id)


def course_lookup(id_or_slug: str) -> ColumnElement[bool]:
    """By id, or by slug; what is neither matches nothing (a 404, never a query error)."""
    try:
        return Course.id == uuid.UUID(id_or_slug)
    except ValueError:
        return Course.slug == id_or_slug if re.fullmatch(SLUG_PATTERN, id_or_slug) else false()
