"""Preferences are known keys with strict types: a BCP 47 language (stored in its
conventional case), an IANA time zone, a theme, a boolean; anything else is refused. And
the profile requests around the email: an admin cannot send one."""

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from services.users.preferences import DEFAULTS, TIME_ZONES
from services.users.schemas import (
    AdminUserPatch,
    AdminUserUpdate,
    PreferencesPatch,
    PreferencesResponse,
    PreferencesUpdate,
    ProfilePatch,
    UserCreate,
)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("en", "en"),
        ("EN", "en"),
        ("en-gb", "en-GB"),
        ("pt-BR", "pt-BR"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("es-419", "es-419"),
        ("sl-rozaj-biske", "sl-rozaj-biske"),
        ("de-CH-1996", "de-CH-1996"),
        ("en-US-u-ca-gregory", "en-US-u-ca-gregory"),
        ("en-x-Private", "en-x-private"),
        ("zh-yue-HK", "zh-yue-HK"),
    ],
)
def test_language_tags_are_taken_in_their_conventional_case(sent: str, stored: str) -> None:
    assert PreferencesPatch.model_validate({"language": sent}).language == stored


@pytest.mark.parametrize(
    "tag",
    ["e", "english!", "en_GB", "en-", "-en", "en--GB", "en-GB-", "x", "123", "en-a", "a" * 36],
)
def test_what_is_not_a_language_tag_is_refused(tag: str) -> None:
    with pytest.raises(ValidationError) as refused:
        PreferencesPatch.model_validate({"language": tag})
    assert refused.value.errors()[0]["loc"] == ("language",)


def test_time_zones_are_iana_names() -> None:
    assert {"UTC", "Europe/Paris", "America/Argentina/Buenos_Aires"} <= set(TIME_ZONES)
    assert "localtime" not in TIME_ZONES
    assert PreferencesPatch.model_validate({"timezone": "Asia/Tokyo"}).timezone == "Asia/Tokyo"
    for name in ("Mars/Olympus_Mons", "europe/paris", "../../etc/passwd", "", "UTC "):
        with pytest.raises(ValidationError) as refused:
            PreferencesPatch.model_validate({"timezone": name})
        assert refused.value.errors()[0]["loc"] == ("timezone",)


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (PreferencesPatch, {"email_notifications": 1}, "email_notifications"),
        (PreferencesPatch, {"email_notifications": "true"}, "email_notifications"),
        (PreferencesPatch, {"theme": "blue"}, "theme"),
        (PreferencesPatch, {"theme": None}, "theme"),
        (PreferencesPatch, {"language": 7}, "language"),
        (PreferencesPatch, {"colour": "red"}, "colour"),
        (PreferencesUpdate, {"font_size": 12}, "font_size"),
        (PreferencesUpdate, {"timezone": None}, "timezone"),
    ],
)
def test_unknown_keys_and_loose_types_are_refused(
    model: type[BaseModel], body: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        model.model_validate(body)
    assert refused.value.errors()[0]["loc"][0] == field


def test_defaults_are_the_documented_ones() -> None:
    assert DEFAULTS == {
        "language": "en",
        "timezone": "UTC",
        "theme": "system",
        "email_notifications": True,
    }
    assert PreferencesUpdate().model_dump() == DEFAULTS
    assert PreferencesResponse.model_validate(DEFAULTS).model_dump() == DEFAULTS
    assert PreferencesPatch.model_validate({}).model_dump(exclude_unset=True) == {}


def test_emails_are_one_rule_and_admins_do_not_change_them() -> None:
    created = UserCreate.model_validate({"email": " Ada@School.TEST ", "name": "Ada"})
    assert (created.email, created.role, created.password) == ("ada@school.test", "student", None)
    with pytest.raises(ValidationError):
        UserCreate.model_validate({"email": "ada@", "name": "Ada"})
    with pytest.raises(ValidationError) as short:
        UserCreate.model_validate({"email": "a@b.test", "name": "A", "password": "short"})
    assert short.value.errors()[0]["loc"] == ("password",)
    change = ProfilePatch.model_validate({"email": "New@Example.com", "current_password": "x"})
    assert change.model_dump(exclude_unset=True) == {
        "email": "new@example.com",
        "current_password": "x",
    }
    for model, body in (
        (AdminUserPatch, {"email": "new@example.com"}),
        (AdminUserUpdate, {"name": "Ada", "role": "student", "email": "new@example.com"}),
    ):
        with pytest.raises(ValidationError) as refused:
            model.model_validate(body)
        (error,) = refused.value.errors()
        assert error["loc"] == ("email",)
        assert "its owner" in error["msg"]
