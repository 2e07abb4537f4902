"""`page`/`per_page` in, `{"data": [...], "pagination": {...}}` out; sorting by allowed fields."""

import math
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import ValidationFailed

MAX_PER_PAGE = 100
# Far beyond any real listing, and small enough that the offset fits a 64-bit integer.
MAX_PAGE = 1_000_000
T = TypeVar("T")


@dataclass(frozen=True)
class PageParams:
    page: int
    per_page: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


async def page_params(
    page: int = Query(1, ge=1, le=MAX_PAGE, description="Page number, from 1"),
    per_page: int | None = Query(None, ge=1, le=MAX_PER_PAGE, description="Items per page"),
    page_size: int | None = Query(None, ge=1, le=MAX_PER_PAGE, description="Alias of per_page"),
) -> PageParams:
    return PageParams(page=page, per_page=per_page or page_size or 20)


class Pagination(BaseModel):
    page: int
    per_page: int
    total: int
    pages: int


class Page(BaseModel, Generic[T]):
    data: list[T]
    pagination: Pagination


SortOrder = Literal["asc", "desc"]


def order_by(columns: dict[str, Any], sort: str, order: SortOrder) -> Any:
    column = columns.get(sort)
    if column is None:
        raise ValidationFailed(
            details={"field": "sort", "issue": f"Sort by one of: {', '.join(sorted(columns))}"}
        )
    return column.desc() if order == "desc" else column.asc()


async def paginate(
    session: AsyncSession, query: Select[Any], params: PageParams
) -> tuple[list[Any], Pagination]:
    """Runs the page query and one count over the same filters."""
    count_query = select(func.count()).select_from(query.order_by(None).subquery())
    total = int((await session.execute(count_query)).scalar_one())
    rows = (await session.scalars(query.offset(params.offset).limit(params.per_page))).all()
    pagination = Pagination(
        page=params.page,
        per_page=params.per_page,
        total=total,
        pages=math.ceil(total / params.per_page) if total else 0,
    )
    return list(rows), pagination
