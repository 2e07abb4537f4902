"""Auth's own error codes, more specific than the platform's where a client acts on them."""

from shared.errors import ApiError


class InvalidVerificationToken(ApiError):
    status_code, code = 400, "INVALID_VERIFICATION_TOKEN"


class InvalidResetToken(ApiError):
    status_code, code = 400, "INVALID_RESET_TOKEN"


class InvalidEmailChangeToken(ApiError):
    status_code, code = 400, "INVALID_EMAIL_CHANGE_TOKEN"


class InvalidCurrentPassword(ApiError):
    status_code, code = 400, "INVALID_CURRENT_PASSWORD"


class EmailNotVerified(ApiError):
    status_code, code = 403, "EMAIL_NOT_VERIFIED"


class EmailAlreadyVerified(ApiError):
    status_code, code = 409, "EMAIL_ALREADY_VERIFIED"


# What each code means, for the OpenAPI document (`responses=`).
DESCRIPTIONS = {
    "INVALID_VERIFICATION_TOKEN": "the verification link is unknown, used already or expired "
    "(`details.reason`: unknown, used, expired)",
    "INVALID_RESET_TOKEN": "the password link is unknown, used already or expired "
    "(`details.reason`: unknown, used, expired)",
    "INVALID_EMAIL_CHANGE_TOKEN": "the confirmation link is unknown, used already or expired "
    "(`details.reason`: unknown, used, expired)",
    "INVALID_CURRENT_PASSWORD": "`current_password` is not the account's password",
    "EMAIL_NOT_VERIFIED": "REQUIRE_VERIFIED_EMAIL is on and the account's address is not "
    "verified yet (follow the link of the verification mail)",
    "EMAIL_ALREADY_VERIFIED": "the account's address is verified already",
}
