"""The preferences a user can set, their types and their defaults.

A language is a well-formed BCP 47 tag (RFC 5646: language, script, region, variants,
extensions, private use), stored in its conventional case (`en-GB`, `zh-Hant-TW`); a time
zone is an IANA name this machine's time zone database knows (`Europe/Paris`, `UTC`)."""

import re
import zoneinfo
from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints, WithJsonSchema
from pydantic_core import PydanticCustomError

from shared.text import JsonSchemaPattern

DEFAULTS: dict[str, Any] = {
    "language": "en",
    "timezone": "UTC",
    "theme": "system",
    "email_notifications": True,
}

# RFC 5646 §2.1: langtag = language ["-" script] ["-" region] *("-" variant)
# *("-" extension) ["-" privateuse]. Implementations must take tags of 35 characters.
LANGUAGE_MAX_LENGTH = 35
LANGUAGE_PATTERN = (
    r"^(?:[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}|[A-Za-z]{4,8})"
    r"(?:-[A-Za-z]{4})?"
    r"(?:-(?:[A-Za-z]{2}|[0-9]{3}))?"
    r"(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*"
    r"(?:-[0-9A-WYZa-wyz](?:-[A-Za-z0-9]{2,8})+)*"
    r"(?:-[Xx](?:-[A-Za-z0-9]{1,8})+)?$"
)
_LANGUAGE = re.compile(LANGUAGE_PATTERN)

# `localtime` is this machine's own zone, not an IANA name.
TIME_ZONES = sorted(zoneinfo.available_timezones() - {"localtime"})
_TIME_ZONES = frozenset(TIME_ZONES)


def canonical_language(tag: str) -> str:
    """The tag in the case RFC 5646 §2.1.1 recommends: `EN-gb` → `en-GB`."""
    if not _LANGUAGE.match(tag):
        raise PydanticCustomError("language_tag", "Must be a BCP 47 language tag, e.g. en-GB")
    subtags = tag.lower().split("-")
    result = [subtags[0]]
    singleton_seen = False
    for subtag in subtags[1:]:
        if len(subtag) == 1:
            singleton_seen = True
        if not singleton_seen and len(subtag) == 2 and subtag.isalpha():
            subtag = subtag.upper()
        elif not singleton_seen and len(subtag) == 4 and subtag.isalpha():
            subtag = subtag.title()
        result.append(subtag)
    return "-".join(result)


def known_time_zone(name: str) -> str:
    if name not in _TIME_ZONES:
        raise PydanticCustomError(
            "time_zone", "Must be an IANA time zone name, e.g. Europe/Paris or UTC"
        )
    return name


Language = Annotated[
    str,
    StringConstraints(min_length=2, max_length=LANGUAGE_MAX_LENGTH),
    AfterValidator(canonical_language),
    JsonSchemaPattern(LANGUAGE_PATTERN),
]
TimeZone = Annotated[
    str,
    AfterValidator(known_time_zone),
    WithJsonSchema({"type": "string", "enum": TIME_ZONES, "description": "An IANA time zone name"}),
]
