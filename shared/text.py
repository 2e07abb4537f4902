"""Text that every database of the platform can store. PostgreSQL refuses NUL characters,
so a request carrying one would fail at the database as a 500: it is refused up front
with 400 VALIDATION_ERROR instead. Request schemas use `Text` wherever they take `str`.

Both types say so in their JSON schema too (a `pattern`), so that the OpenAPI document
describes exactly the strings that are accepted."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import GroupedMetadata
from pydantic import AfterValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

# What the validators below accept, for the JSON schema: no NUL anywhere, and (for
# NonBlankText) at least one character that is not whitespace. The whitespace is spelled
# out as the characters `str.strip()` removes: `\s` means less in JSON Schema's regexes.
WHITESPACE = r"\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
WITHOUT_NUL = r"^[^\x00]*$"
NOT_BLANK_WITHOUT_NUL = rf"^[{WHITESPACE}]*[^{WHITESPACE}\x00][^\x00]*$"


@dataclass(frozen=True)
class JsonSchemaPattern:
    """Annotated metadata that documents a `pattern`. A pattern already there (a field's own)
    stays, unless `replace`: for a pattern that says more than the one validated, e.g. what
    a validator function refuses besides."""

    pattern: str
    replace: bool = False

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema: dict[str, Any] = handler(core_schema)
        if schema.get("type") == "string" and (self.replace or "pattern" not in schema):
            schema["pattern"] = self.pattern
        return schema


def _without_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _not_blank(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    return value


Text = Annotated[str, AfterValidator(_without_nul), JsonSchemaPattern(WITHOUT_NUL)]


class NotBlank(GroupedMetadata):
    """No NUL, not only whitespace, stored stripped. Where a field that may be null or left
    out limits the length, put the limit first, so that it counts the text as sent (as the
    JSON schema says): `Annotated[str, StringConstraints(max_length=200), NotBlank()]`."""

    def __iter__(self) -> Iterator[object]:
        yield AfterValidator(_without_nul)
        yield AfterValidator(_not_blank)
        yield JsonSchemaPattern(NOT_BLANK_WITHOUT_NUL)


# A name or title: stored stripped; one that is only whitespace is refused.
NonBlankText = Annotated[str, NotBlank()]
