"""Changing credentials: verifying the address, changing it, changing the password, and the
forgotten password (reset, or set for the first time from an admin's invitation). Every link
is a single-use token sent by mail (`one_time_tokens.py`, `mails.py`). Sessions are revoked
after the account's change is flushed (`revocations.py`)."""

import uuid
from typing import NoReturn

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth import mails, one_time_tokens
from services.auth import revocations as revocation_records
from services.auth.deps import AuthCollaborators
from services.auth.errors import (
    EmailAlreadyVerified,
    InvalidCurrentPassword,
    InvalidEmailChangeToken,
    InvalidResetToken,
    InvalidVerificationToken,
)
from services.auth.events import (
    PasswordChange,
    record_email_changed,
    record_email_verified,
    record_password_changed,
)
from services.auth.models import Account
from services.auth.one_time_tokens import Purpose, TokenRejected
from services.auth.passwords import hash_password, verify_password
from services.auth.schemas import (
    EmailChangeRequest,
    PasswordChangeRequest,
    PasswordResetRequest,
)
from services.auth.service import check_attempt, email_taken, get_account
from shared.errors import ApiError, PermissionDenied, ValidationFailed
from shared.logging import get_logger
from shared.security import Identity

log = get_logger(__name__)

_MESSAGES = {
    "unknown": "This link is not valid",
    "used": "This link has been used already",
    "expired": "This link has expired",
}


def _rejected(error: type[ApiError], rejected: TokenRejected) -> NoReturn:
    raise error(_MESSAGES[rejected.reason], details={"reason": rejected.reason}) from rejected


def _mark_verified(session: AsyncSession, account: Account) -> None:
    if not account.email_verified:
        account.email_verified = True
        record_email_verified(session, account)


async def _active_account(
    session: AsyncSession, token_account: uuid.UUID, error: type[ApiError]
) -> Account:
    account = await session.get(Account, token_account)
    if account is None:
        raise error(_MESSAGES["unknown"], details={"reason": "unknown"})
    if not account.is_active:
        raise PermissionDenied("Account is disabled")
    return account


# Verification.


async def verify_email(session: AsyncSession, presented: str) -> None:
    try:
        token = await one_time_tokens.spend(session, ("verify_email",), presented)
    except TokenRejected as rejected:
        _rejected(InvalidVerificationToken, rejected)
    account = await _active_account(session, token.account_id, InvalidVerificationToken)
    if account.email != token.email:  # sent to an address the account no longer has
        raise InvalidVerificationToken(_MESSAGES["used"], details={"reason": "used"})
    _mark_verified(session, account)
    await one_time_tokens.retire(session, account.id, ("verify_email",))


async def resend_verification(session: AsyncSession, identity: Identity) -> None:
    account = await get_account(session, identity.user_id)
    if account.email_verified:
        raise EmailAlreadyVerified("The email address is verified already")
    mails.queue_verification(session, account)


# Passwords.


def forgot_password(session: AsyncSession, email: str) -> None:
    """The same work for any address, with an account or not: one row queued. Who the
    address belongs to is looked up when the mail would be sent (`mails.py`)."""
    mails.queue_password_reset(session, email)


async def reset_password(
    session: AsyncSession, auth: AuthCollaborators, request: PasswordResetRequest
) -> None:
    """A new password from a reset link (or the first one, from an admin's invitation):
    every session and API token of the account is revoked, its lockout is cleared, and its
    address counts as verified (the link reached it)."""
    purposes: tuple[Purpose, ...] = ("reset_password", "set_password")
    try:
        token = await one_time_tokens.spend(session, purposes, request.token)
    except TokenRejected as rejected:
        _rejected(InvalidResetToken, rejected)
    account = await _active_account(session, token.account_id, InvalidResetToken)
    if account.email != token.email:
        raise InvalidResetToken(_MESSAGES["used"], details={"reason": "used"})
    account.password_hash = await hash_password(request.new_password)
    _mark_verified(session, account)
    await one_time_tokens.retire(session, account.id, purposes)
    await session.flush()
    await revocation_records.revoke_all_sessions(
        session, auth.revocations, account.id, settings=auth.settings
    )
    await auth.lockout.clear(account.email)
    reason: PasswordChange = "set" if token.purpose == "set_password" else "reset"
    record_password_changed(session, account, reason)
    log.info("password_reset", account_id=str(account.id), reason=reason)


async def _check_current_password(
    auth: AuthCollaborators, account: Account, current_password: str
) -> None:
    await check_attempt(auth.lockout, account.email)
    if not await verify_password(account.password_hash, current_password):
        raise InvalidCurrentPassword(
            "The current password is not right", details={"field": "current_password"}
        )
    await auth.lockout.succeeded(account.email)


async def change_password(
    session: AsyncSession,
    auth: AuthCollaborators,
    identity: Identity,
    request: PasswordChangeRequest,
) -> None:
    """A new password, given the current one; the account's other sessions are revoked, the
    caller's stays."""
    account = await get_account(session, identity.user_id)
    await _check_current_password(auth, account, request.current_password)
    account.password_hash = await hash_password(request.new_password)
    await session.flush()
    await revocation_records.revoke_other_sessions(
        session,
        auth.revocations,
        account.id,
        uuid.UUID(identity.session_id) if identity.session_id else None,
        settings=auth.settings,
    )
    record_password_changed(session, account, "change")


# The address.


async def request_email_change(
    session: AsyncSession,
    auth: AuthCollaborators,
    identity: Identity,
    request: EmailChangeRequest,
) -> str:
    """Sends a confirmation link to the new address; the account keeps its address until it
    is followed."""
    account = await get_account(session, identity.user_id)
    await _check_current_password(auth, account, request.current_password)
    if request.new_email == account.email:
        raise ValidationFailed(
            details={"field": "new_email", "issue": "is the account's address already"}
        )
    if await session.scalar(select(Account.id).where(Account.email == request.new_email)):
        raise email_taken("new_email")
    mails.queue_email_change(session, account, request.new_email)
    return request.new_email


async def confirm_email_change(session: AsyncSession, presented: str) -> None:
    """Switches the address to the confirmed one, which is verified by that: the old address
    is told, and every link sent to it is void."""
    try:
        token = await one_time_tokens.spend(session, ("change_email",), presented)
    except TokenRejected as rejected:
        _rejected(InvalidEmailChangeToken, rejected)
    account = await _active_account(session, token.account_id, InvalidEmailChangeToken)
    previous = account.email
    if token.email == previous:
        return
    if await session.scalar(
        select(Account.id).where(Account.email == token.email, Account.id != account.id)
    ):
        raise email_taken()
    await one_time_tokens.retire(
        session, account.id, ("change_email", "verify_email", "reset_password", "set_password")
    )
    account.email = token.email
    account.email_verified = True
    try:
        await session.flush()
    except IntegrityError as exc:  # taken meanwhile by a concurrent request
        raise email_taken() from exc
    mails.queue_email_changed_notice(session, previous, account.email)
    record_email_changed(session, account, previous)
    record_email_verified(session, account)
    log.info("email_changed", account_id=str(account.id))
