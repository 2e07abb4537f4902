"""Text that every database of the platform can store. PostgreSQL refuses NUL characters,
so a request carrying one would fail at the database as a 500: it is refused up front
with 400 VALIDATION_ERROR instead. Request schemas use `Text` wherever they take `str`."""

from typing import Annotated

from pydantic import AfterValidator


def _without_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_without_nul)]
