"""The one rule for email addresses, wherever one enters Lyceum: the first admin's
(LYCEUM_ADMIN_EMAIL), registration, login, accounts made by admins, email changes, and
every other service's email fields (`Email`).

An address is valid when its syntax is (email-validator, without looking up its domain:
`check_deliverability=False`, `globally_deliverable=False`). No domain is refused for being
special-use or reserved: `admin@lyceum.test`, `ops@mail.internal`, `root@localhost` are
valid, because operators use such names in development and on private networks, and an
address the platform stores must be one its owner can log in with. Surrounding spaces are
dropped and the whole address is lower-cased, so that `Ada@Example.COM` and
`ada@example.com` are one account."""

from typing import Annotated, Any

import email_validator
from pydantic import AfterValidator, WithJsonSchema

# email-validator refuses the special-use domains through this module-level list, which its
# documentation lets an application change; Lyceum accepts them all (above).
email_validator.SPECIAL_USE_DOMAIN_NAMES.clear()

MAX_LENGTH = 254

# The ASCII addresses the rule accepts, as a pattern (for OpenAPI documents): a dot-atom local
# part of at most 64 characters, and a domain of one or more labels (letters, digits and
# hyphens, neither first nor last, and no hyphens in the 3rd and 4th places, as IDNA says).
# Internationalised addresses are accepted too; the pattern promises the ASCII ones.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"(?![A-Za-z0-9]{2}--)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
PATTERN = rf"^(?=[^@]{{1,64}}@){_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*$"
DESCRIPTION = (
    "An email address, stored lower-cased; special-use domains (.test, .example, .internal, "
    "localhost, ...) are valid"
)


def normalise_email(value: str) -> str:
    """The address as Lyceum stores it; ValueError when it is not valid."""
    try:
        validated = email_validator.validate_email(
            value.strip(), check_deliverability=False, globally_deliverable=False
        )
    except email_validator.EmailNotValidError as exc:
        raise ValueError(f"value is not a valid email address: {exc}") from exc
    return validated.normalized.lower()


_SCHEMA: dict[str, Any] = {"type": "string", "format": "email", "maxLength": MAX_LENGTH}

Email = Annotated[str, AfterValidator(normalise_email), WithJsonSchema(_SCHEMA)]
