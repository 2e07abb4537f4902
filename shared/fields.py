"""Field types for request schemas whose JSON schema says exactly what they accept.

Pydantic is lenient where JSON Schema is not: by default an `int` field takes `true` or
`"5"`, a `bool` field takes `1` or `"yes"`, a `datetime` takes a number of seconds. The
OpenAPI document says `integer`, `boolean` and `string` (date-time), so requests take
exactly those: `Integer`, `Number`, `Boolean` and `DateTime` refuse the rest with 400.

`Omittable[T]` is a PATCH field that may be left out (the resource keeps its value) but
cannot be null, because the resource cannot be without it. Its JSON schema has no null
(and `shared.openapi` drops the `default: null` that stands for "left out")."""

from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BeforeValidator, GetJsonSchemaHandler, Strict
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

T = TypeVar("T")


def _integer(value: Any) -> Any:
    """An integer, or a number with no fraction (JSON Schema's integer); never a bool or text."""
    if isinstance(value, bool | str | bytes):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


def _number(value: Any) -> Any:
    """A JSON number (integer or not); never a bool or text."""
    if isinstance(value, bool | str | bytes):
        raise PydanticCustomError("float_type", "Input should be a valid number")
    return value


def _date_time_text(value: Any) -> Any:
    if not isinstance(value, str | datetime):
        raise PydanticCustomError("datetime_type", "Input should be an RFC 3339 date-time")
    return value


def _not_null(value: T | None) -> T:
    if value is None:
        raise PydanticCustomError("not_null", "Cannot be null: leave the field out to keep it")
    return value


class _WithoutNull:
    """JSON schema of `T | None` without the null: `null` is refused."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema: dict[str, Any] = handler(core_schema)
        choices = schema.get("anyOf")
        if isinstance(choices, list):
            kept = [choice for choice in choices if choice != {"type": "null"}]
            if len(kept) == 1:
                schema.pop("anyOf")
                schema = {**kept[0], **schema}
            else:
                schema["anyOf"] = kept
        return schema


Integer = Annotated[int, BeforeValidator(_integer)]
Number = Annotated[float, BeforeValidator(_number)]
Boolean = Annotated[bool, Strict()]
DateTime = Annotated[datetime, BeforeValidator(_date_time_text)]
Omittable = Annotated[T | None, AfterValidator(_not_null), _WithoutNull()]
