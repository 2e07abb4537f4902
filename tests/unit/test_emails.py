"""The one rule for email addresses: syntax only, special-use domains valid, stored
lower-cased; the same at start-up (LYCEUM_ADMIN_EMAIL), registration, login, admin creation
and email change."""

import re

import pytest
from pydantic import BaseModel, ValidationError

from services.auth.schemas import AccountCreate, EmailChangeRequest, LoginRequest, RegisterRequest
from services.auth.settings import AuthSettings
from shared.emails import PATTERN, Email, normalise_email


class Body(BaseModel):
    email: Email


@pytest.mark.parametrize(
    "address",
    [
        "admin@lyceum.test",
        "ops@mail.internal",
        "root@localhost",
        "printer@office.local",
        "someone@example.com",
        "a@example",
        "first.last+tag@sub.example.org",
        "x@home.arpa",
        "hidden@xyz.onion",
        "never@nothing.invalid",
    ],
)
def test_special_use_and_private_domains_are_valid(address: str) -> None:
    assert normalise_email(address) == address
    assert re.search(PATTERN, address)


@pytest.mark.parametrize(
    "address",
    ["nope", "a@", "@example.com", "a@b..c", "a@-b.com", "Ada <a@b.com>", "a b@c.com", "a@b_c.d"],
)
def test_what_is_not_an_address_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match="not a valid email address"):
        normalise_email(address)
    assert not re.search(PATTERN, address)
    with pytest.raises(ValidationError):
        Body(email=address)


def test_addresses_are_stored_lower_cased_and_trimmed() -> None:
    assert normalise_email("  Ada.Lovelace@Example.COM ") == "ada.lovelace@example.com"
    assert Body(email="Admin@Lyceum.Test").email == "admin@lyceum.test"


def test_numbers_are_not_addresses() -> None:
    with pytest.raises(ValidationError):
        Body.model_validate({"email": 12})


def test_every_entry_point_applies_the_same_rule() -> None:
    address, stored = "Admin@Lyceum.Test", "admin@lyceum.test"
    password = "correct horse"
    assert AuthSettings(admin_email=address).admin_email == stored
    assert RegisterRequest(email=address, password=password, name="A").email == stored
    assert LoginRequest(email=address, password=password).email == stored
    assert AccountCreate(email=address, name="A").email == stored
    assert EmailChangeRequest(new_email=address, current_password=password).new_email == stored
    with pytest.raises(ValidationError):
        AuthSettings(admin_email="not-an-address")


def test_the_json_schema_says_email() -> None:
    schema = Body.model_json_schema()["properties"]["email"]
    assert schema["type"] == "string"
    assert schema["format"] == "email"
    assert schema["maxLength"] == 254
