"""Profile requests: what cannot be stored (a null name or role, a blank name, NUL
characters) is refused by the schema, so that it becomes 400 rather than a database error."""

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from services.users.schemas import AdminUserPatch, AdminUserUpdate, ProfilePatch, ProfileUpdate


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (ProfilePatch, {"name": None}, "name"),
        (ProfilePatch, {"name": "   "}, "name"),
        (ProfilePatch, {"name": "Ada\x00"}, "name"),
        (ProfilePatch, {"bio": "a\x00b"}, "bio"),
        (ProfileUpdate, {"name": " \t "}, "name"),
        (ProfileUpdate, {"name": None}, "name"),
        (ProfileUpdate, {"name": "Ada", "bio": "\x00"}, "bio"),
        (AdminUserPatch, {"role": None}, "role"),
        (AdminUserPatch, {"is_active": None}, "is_active"),
        (AdminUserPatch, {"name": None}, "name"),
        (AdminUserUpdate, {"name": "Ada", "role": None}, "role"),
        (AdminUserUpdate, {"name": "Ada", "role": "student", "is_active": None}, "is_active"),
    ],
)
def test_what_cannot_be_stored_is_refused(
    model: type[BaseModel], body: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        model.model_validate(body)
    assert refused.value.errors()[0]["loc"][0] == field


def test_names_are_stripped_and_null_clears_what_may_be_empty() -> None:
    patch = ProfilePatch.model_validate({"name": "  Ada  ", "bio": None, "avatar_url": None})
    assert patch.model_dump(exclude_unset=True) == {"name": "Ada", "bio": None, "avatar_url": None}
    assert ProfileUpdate.model_validate({"name": " Ada "}).name == "Ada"
    assert AdminUserPatch.model_validate({}).model_dump(exclude_unset=True) == {}
