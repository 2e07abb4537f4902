"""The mail auth sends, queued in its database with the change that causes it (`shared.mail`)
and rendered when it is sent: a mail with a link gets its single-use token then, and the
token's hash is stored just before the mail goes to the server (removed if it is refused).

Links point at PUBLIC_URL (`/verify-email?token=...`, `/reset-password?token=...`,
`/confirm-email?token=...`); there is no web page behind them yet, so each mail also says how
to use the token with the API."""

import json
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth import one_time_tokens
from services.auth.models import Account, MailOutbox
from services.auth.one_time_tokens import Purpose
from services.auth.settings import AuthSettings
from shared.logging import get_logger
from shared.mail import Mail, MailQueue, RenderedMail

log = get_logger(__name__)

queue = MailQueue(MailOutbox)

VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"  # noqa: S105 (a kind of mail, not a secret)
SET_PASSWORD = "set_password"  # noqa: S105
CONFIRM_EMAIL_CHANGE = "confirm_email_change"
EMAIL_CHANGED = "email_changed"

# Reset or verification links one account may have outstanding at once: more requests send
# nothing until one is used or expires, so that nobody can flood a mailbox through "forgot
# password" or "send the verification again".
MAX_OUTSTANDING_LINKS = 5


def queue_verification(session: AsyncSession, account: Account) -> None:
    queue.add(session, VERIFY_EMAIL, account.email, {"account_id": str(account.id)})


def queue_password_reset(session: AsyncSession, email: str) -> None:
    """Whoever the address belongs to, if anybody: that is decided when the mail is sent,
    so that the request does the same work for every address."""
    queue.add(session, RESET_PASSWORD, email)


def queue_account_setup(session: AsyncSession, account: Account) -> None:
    queue.add(session, SET_PASSWORD, account.email, {"account_id": str(account.id)})


def queue_email_change(session: AsyncSession, account: Account, new_email: str) -> None:
    queue.add(session, CONFIRM_EMAIL_CHANGE, new_email, {"account_id": str(account.id)})


def queue_email_changed_notice(session: AsyncSession, previous_email: str, new_email: str) -> None:
    queue.add(session, EMAIL_CHANGED, previous_email, {"new_email": new_email})


class MailRenderer:
    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings

    async def __call__(self, session: AsyncSession, row: Any) -> RenderedMail | None:
        params = row.parameters()
        recipient: str = row.recipient
        if row.kind == EMAIL_CHANGED:
            return RenderedMail(self._email_changed(recipient, params["new_email"]))
        if row.kind == RESET_PASSWORD:
            account = await session.scalar(select(Account).where(Account.email == recipient))
        else:
            account = await session.get(Account, uuid.UUID(params["account_id"]))
        if account is None or not account.is_active:
            return None
        if row.kind == VERIFY_EMAIL:
            if account.email_verified or account.email != recipient:
                return None
            if await self._too_many_links(session, account, "verify_email"):
                return None
            return self._with_link(
                account, "verify_email", recipient, self._settings.email_verification_ttl
            )
        if row.kind == RESET_PASSWORD:
            if await self._too_many_links(session, account, "reset_password"):
                return None
            return self._with_link(
                account, "reset_password", recipient, self._settings.password_reset_ttl
            )
        if row.kind == SET_PASSWORD:
            if account.email != recipient:
                return None
            return self._with_link(
                account, "set_password", recipient, self._settings.account_setup_ttl
            )
        if row.kind == CONFIRM_EMAIL_CHANGE:
            taken = await session.scalar(
                select(Account.id).where(Account.email == recipient, Account.id != account.id)
            )
            if taken is not None:
                return None
            return self._with_link(
                account, "change_email", recipient, self._settings.email_change_ttl
            )
        raise ValueError(f"unknown kind of mail: {row.kind}")

    async def _too_many_links(
        self, session: AsyncSession, account: Account, purpose: Purpose
    ) -> bool:
        if await one_time_tokens.outstanding(session, account.id, purpose) < MAX_OUTSTANDING_LINKS:
            return False
        log.warning("mail_links_outstanding", account_id=str(account.id), purpose=purpose)
        return True

    def _with_link(
        self, account: Account, purpose: Purpose, recipient: str, ttl: timedelta
    ) -> RenderedMail:
        record, token = one_time_tokens.issue(account.id, purpose, recipient, ttl)
        compose = {
            "verify_email": self._verify_email,
            "reset_password": self._reset_password,
            "set_password": self._set_password,
            "change_email": self._confirm_email_change,
        }[purpose]
        return RenderedMail(compose(account, recipient, token, ttl), records=[record])

    def _api(self, path: str) -> str:
        return self._settings.link(f"/api/v1/auth{path}")

    def _curl(self, path: str, body: str) -> str:
        return (
            f"  curl -X POST {self._api(path)} \\\n"
            f"       -H 'content-type: application/json' -d '{body}'"
        )

    def _verify_email(self, account: Account, recipient: str, token: str, ttl: timedelta) -> Mail:
        link = self._settings.link(f"/verify-email?token={token}")
        return Mail(
            recipient,
            "Confirm your email address",
            f"Hello {account.name},\n\n"
            f"please confirm that {recipient} is your address for Lyceum:\n\n"
            f"  {link}\n\n"
            f"The link works once, for {_duration(ttl)}. With the API:\n\n"
            f"{self._curl('/verify-email', json.dumps({'token': token}))}\n\n"
            "If you did not sign up for Lyceum, ignore this mail.\n",
        )

    def _reset_password(self, account: Account, recipient: str, token: str, ttl: timedelta) -> Mail:
        link = self._settings.link(f"/reset-password?token={token}")
        body = json.dumps({"token": token, "new_password": "..."})
        return Mail(
            recipient,
            "Reset your password",
            f"Hello {account.name},\n\n"
            "somebody asked to reset the password of your Lyceum account. To choose a new "
            "one:\n\n"
            f"  {link}\n\n"
            f"The link works once, for {_duration(ttl)}, and signs you out everywhere. "
            "With the API:\n\n"
            f"{self._curl('/password/reset', body)}\n\n"
            "If it was not you, ignore this mail: your password stays as it is.\n",
        )

    def _set_password(self, account: Account, recipient: str, token: str, ttl: timedelta) -> Mail:
        link = self._settings.link(f"/reset-password?token={token}")
        body = json.dumps({"token": token, "new_password": "..."})
        return Mail(
            recipient,
            "Your Lyceum account",
            f"Hello {account.name},\n\n"
            f"an administrator made a Lyceum account for you ({recipient}, role "
            f"{account.role}). Choose your password to start:\n\n"
            f"  {link}\n\n"
            f"The link works once, for {_duration(ttl)}. With the API:\n\n"
            f"{self._curl('/password/reset', body)}\n",
        )

    def _confirm_email_change(
        self, account: Account, recipient: str, token: str, ttl: timedelta
    ) -> Mail:
        link = self._settings.link(f"/confirm-email?token={token}")
        return Mail(
            recipient,
            "Confirm your new email address",
            f"Hello {account.name},\n\n"
            f"please confirm that {recipient} is to be the address of your Lyceum account:\n\n"
            f"  {link}\n\n"
            f"The link works once, for {_duration(ttl)}. With the API:\n\n"
            f"{self._curl('/email/confirm', json.dumps({'token': token}))}\n\n"
            "Until then your account keeps its current address. If you did not ask for "
            "this, ignore this mail.\n",
        )

    def _email_changed(self, recipient: str, new_email: str) -> Mail:
        return Mail(
            recipient,
            "Your email address was changed",
            f"Hello,\n\nthe address of your Lyceum account is now {new_email} instead of "
            f"{recipient}.\n\n"
            "If you did not do this, ask an administrator of the platform for help at once.\n",
        )


def _duration(ttl: timedelta) -> str:
    seconds = int(ttl.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"
