"""PUT and PATCH, one rule for every resource: PUT replaces (a field left out takes its
default), PATCH changes only the fields given; both report which fields really changed."""

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel


def requested_values(
    changes: BaseModel, *, replace: bool, kept_unless_given: Iterable[str] = ()
) -> dict[str, Any]:
    """The values a PUT (`replace`) or PATCH asks for. Fields in `kept_unless_given` (a
    slug, a status, a position) keep their value when a PUT leaves them out or sends null."""
    values: dict[str, Any] = changes.model_dump(exclude_unset=not replace)
    for field in kept_unless_given:
        if values.get(field) is None:
            values.pop(field, None)
    return values


def assign_changed(target: object, values: dict[str, Any]) -> list[str]:
    """Sets each value that differs from the target's; returns the names of those fields."""
    changed = []
    for field, value in values.items():
        if getattr(target, field) != value:
            setattr(target, field, value)
            changed.append(field)
    return changed
