"""Mail that is never lost: queued in the service's database in the transaction of the change
that causes it, and sent by a background loop, so that an SMTP outage delays mail and never
fails the request or drops a message.

    in the request's transaction:   queue.add(session, "verify_email", address, {...})
    after commit, or on a poll:     the relay claims due rows, renders each one (the service's
                                    `Renderer`), sends it, and marks it sent

A row is rendered when it is sent, not when it is queued: a mail that carries a secret (a
single-use link) is made at the last moment. What the renderer wants stored with it (the
secret's hash) is committed just before the message goes to the server, so that a link works
as soon as the mail arrives, and removed again if the server does not take the message. A
row the renderer declines (`None`: nobody to write to any more) is deleted.

Failures:
- the server is away (refused or dropped connection, timeout, a 4xx greeting, failed
  authentication): every due row waits, retried after a delay that doubles from
  MAIL_RETRY_SECONDS up to MAIL_RETRY_MAX_SECONDS; nothing is counted against a row;
- the server refuses one message for a while (4xx): that row is retried with the same
  back-off, for as long as it takes;
- the server refuses one message for good (5xx), or it cannot be rendered: that row is
  retried, and after MAIL_MAX_ATTEMPTS set aside (`failed_at`, logged `mail_failed`).

Several replicas can share one queue: a row is claimed (its `next_attempt_at` moved past the
time a send can take) in a short transaction before it is sent, so no two send it at once;
a process that dies with a claimed row leaves it to be sent again when the claim runs out.

SMTP_URL is `smtp://[user:password@]host:port` (`?starttls=true` to upgrade the connection
with STARTTLS) or `smtps://...` (TLS from the first byte). Without it, mail is written as
`.eml` files under `<VAR_DIR>/mail/` and the links in it are logged (`mail_written`), for
development with `make run`."""

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
from pydantic import Field
from pydantic_settings import BaseSettings
from sqlalchemy import Index, Integer, String, Text, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from shared.db import Database, UTCDateTime, utcnow
from shared.logging import get_logger
from shared.wakeups import WakeOnCommitLoop, flag_work

log = get_logger(__name__)

PENDING_FLAG = "mail_pending"
LAST_ERROR_LENGTH = 1000
_LINK = re.compile(r"https?://\S+")


class MailSettings(BaseSettings):
    """A service that sends mail adds these to its settings."""

    smtp_url: str | None = None
    mail_from: str = "Lyceum <no-reply@localhost>"
    # The base of the links in mails: where people reach the platform (the gateway).
    public_url: str = "http://127.0.0.1:8000"
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    mail_poll_seconds: float = Field(default=5.0, gt=0)
    mail_retry_seconds: float = Field(default=1.0, ge=0)
    mail_retry_max_seconds: float = Field(default=300.0, ge=0)
    mail_max_attempts: int = Field(default=5, ge=1)

    def link(self, path: str) -> str:
        """`/verify-email?token=...` under PUBLIC_URL."""
        return f"{self.public_url.rstrip('/')}{path}"


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    start_tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> "SmtpServer":
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP_URL must be smtp://[user:password@]host:port or smtps://...")
        use_tls = parts.scheme == "smtps"
        start_tls = parse_qs(parts.query).get("starttls", ["false"])[-1].lower() in (
            "true",
            "1",
            "yes",
        )
        if use_tls and start_tls:
            raise ValueError("SMTP_URL: smtps:// is TLS already; starttls=true is for smtp://")
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if use_tls else 587 if start_tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
            start_tls=start_tls,
        )


@dataclass(frozen=True)
class Mail:
    recipient: str
    subject: str
    text: str


@dataclass
class RenderedMail:
    mail: Mail
    # Rows committed just before the mail is sent, removed if it is not (a link's token hash).
    records: list[Any] = field(default_factory=list)


# Makes the mail of one queued row, reading what it needs through the session (it must not
# write): None when there is nothing to send any more.
Renderer = Callable[[AsyncSession, Any], Awaitable[RenderedMail | None]]


class MailOutboxMixin:
    """Columns of a service's mail queue. A row waits until `sent_at` or `failed_at` is set;
    `params` (JSON) is what its kind of mail is rendered from. To send a failed row again,
    set `failed_at` back to NULL and `attempts` to 0."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(50), nullable=False)
    recipient: Mapped[str] = mapped_column(String(320), nullable=False)
    params: Mapped[str] = mapped_column(Text, nullable=False, default="{}")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        table: str = cls.__tablename__  # type: ignore[attr-defined]
        return (Index(f"ix_{table}_pending", "sent_at", "failed_at", "next_attempt_at"),)

    def parameters(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.params)
        return loaded


class MailQueue:
    """Queues mail inside the caller's transaction."""

    def __init__(self, model: type[MailOutboxMixin]) -> None:
        self.model = model

    def add(
        self,
        session: AsyncSession,
        kind: str,
        recipient: str,
        params: dict[str, Any] | None = None,
    ) -> None:
        model: Any = self.model
        session.add(
            model(
                id=str(uuid.uuid4()),
                kind=kind,
                recipient=recipient,
                params=json.dumps(params or {}),
                created_at=utcnow(),
                attempts=0,
            )
        )
        flag_work(session, PENDING_FLAG)


class ServerUnavailable(Exception):
    """The mail server cannot take mail now: every row waits."""


class MessageRefused(Exception):
    """The server would not take this message; `permanent` for a 5xx answer."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.permanent = permanent


class Connection(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class Transport(Protocol):
    def connect(self) -> contextlib.AbstractAsyncContextManager[Connection]: ...


class SmtpTransport:
    def __init__(self, server: SmtpServer, timeout_seconds: float) -> None:
        self._server = server
        self._timeout = timeout_seconds

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        client = aiosmtplib.SMTP(
            hostname=self._server.host,
            port=self._server.port,
            username=self._server.username,
            password=self._server.password,
            use_tls=self._server.use_tls,
            start_tls=self._server.start_tls,
            timeout=self._timeout,
        )
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise ServerUnavailable(repr(exc)) from exc
        try:
            yield _SmtpConnection(client)
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()
            client.close()


class _SmtpConnection:
    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self._client = client

    async def send(self, message: EmailMessage) -> None:
        try:
            await self._client.send_message(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            raise MessageRefused(repr(exc), permanent=all(code >= 500 for code in codes)) from exc
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            raise ServerUnavailable(repr(exc)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise MessageRefused(repr(exc), permanent=exc.code >= 500) from exc
        except (aiosmtplib.SMTPException, ValueError) as exc:
            # Not supported by the server (an internationalised address without SMTPUTF8),
            # or an address that cannot be sent safely.
            raise MessageRefused(repr(exc), permanent=True) from exc


class FileTransport:
    """Writes each message as an .eml file and logs its links: mail for a person at the
    machine, with no mail server."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        yield self

    async def send(self, message: EmailMessage) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
        message_id = str(message["Message-ID"]).strip("<>").split("@")[0]
        path = self._directory / f"{stamp}-{message_id}.eml"
        await asyncio.to_thread(path.write_bytes, bytes(message))
        body = message.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        log.info(
            "mail_written",
            path=str(path),
            to=str(message["To"]),
            subject=str(message["Subject"]),
            links=list(dict.fromkeys(_LINK.findall(text))),
        )


def transport_for(settings: MailSettings, var_dir: Path) -> Transport:
    if settings.smtp_url:
        return SmtpTransport(SmtpServer.from_url(settings.smtp_url), settings.smtp_timeout_seconds)
    return FileTransport(var_dir / "mail")


def build_message(mail: Mail, sender: str, message_id: str) -> EmailMessage:
    """One plain-text message; its Message-ID stays the same when it is sent again."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.recipient
    message["Subject"] = mail.subject
    message["Date"] = format_datetime(utcnow())
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = f"<{message_id}@{domain}>"
    message.set_content(mail.text)
    return message


@dataclass
class MailPass:
    """What one `send_pending` call did."""

    sent: int = 0
    dropped: int = 0
    retried: int = 0
    failed: int = 0
    server_unavailable: bool = False


@dataclass
class _Outcome:
    row_id: str
    # "sent", "dropped" (the renderer declined), "failed", or "gone" (sent meanwhile)
    status: str
    rendered: RenderedMail | None = None
    error: str | None = None
    permanent: bool = False


class MailRelay:
    """Sends what the mail queue holds: right after a commit that queued mail, and on a poll
    as the safety net."""

    def __init__(
        self,
        database: Database,
        queue: MailQueue,
        renderer: Renderer,
        settings: MailSettings,
        transport: Transport,
        *,
        batch_size: int = 10,
    ) -> None:
        self._database = database
        self._model: Any = queue.model
        self._render = renderer
        self._settings = settings
        self._transport = transport
        self._batch_size = batch_size
        # A claimed row is left alone for as long as sending a whole batch may take.
        self._claim = timedelta(seconds=settings.smtp_timeout_seconds * (batch_size + 2))
        self._outage_delay = settings.mail_retry_seconds
        self._server_down = False
        self._retry_timer: asyncio.TimerHandle | None = None
        self._loop = WakeOnCommitLoop(
            database,
            PENDING_FLAG,
            self._step,
            poll_seconds=settings.mail_poll_seconds,
            name="mail",
        )

    def start(self) -> None:
        self._loop.start()

    async def stop(self, *, grace_seconds: float = 0.0) -> None:
        """With `grace_seconds`, first lets the batch being sent finish and be recorded: a
        mail out but not marked sent would go out again."""
        await self._loop.stop(grace_seconds=grace_seconds)
        if self._retry_timer is not None:
            self._retry_timer.cancel()

    async def _step(self) -> None:
        result = await self.send_pending()
        soonest = await self._next_due()
        if soonest is not None:
            self._wake_at(soonest)
        if result.server_unavailable:
            await asyncio.sleep(min(1.0, self._settings.mail_poll_seconds))

    def _wake_at(self, when: datetime) -> None:
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        delay = max(0.0, (when - utcnow()).total_seconds())
        self._retry_timer = asyncio.get_running_loop().call_later(delay, self._loop.wake)

    async def _next_due(self) -> datetime | None:
        model = self._model
        async with self._database.sessions() as session:
            due: datetime | None = await session.scalar(
                select(model.next_attempt_at)
                .where(
                    model.sent_at.is_(None),
                    model.failed_at.is_(None),
                    model.next_attempt_at.is_not(None),
                )
                .order_by(model.next_attempt_at)
                .limit(1)
            )
        return due

    async def send_pending(self) -> MailPass:
        """Sends every due row, batch after batch, until none is left or the server is away."""
        result = MailPass()
        while not result.server_unavailable:
            claimed = await self._claim_batch()
            if not claimed:
                break
            await self._send_batch(claimed, result)
        return result

    async def _claim_batch(self) -> list[str]:
        model = self._model
        now = utcnow()
        query = (
            select(model)
            .where(
                model.sent_at.is_(None),
                model.failed_at.is_(None),
                or_(model.next_attempt_at.is_(None), model.next_attempt_at <= now),
            )
            .order_by(model.created_at, model.id)
            .limit(self._batch_size)
        )
        if not self._database.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        async with self._database.unit_of_work(write_lock=True) as session:
            rows = (await session.scalars(query)).all()
            for row in rows:
                row.next_attempt_at = now + self._claim
            return [row.id for row in rows]

    async def _send_batch(self, row_ids: list[str], result: MailPass) -> None:
        outcomes: list[_Outcome] = []
        unsent = list(row_ids)
        try:
            async with self._transport.connect() as connection:
                while unsent:
                    outcome = await self._send_one(connection, unsent[0])
                    outcomes.append(outcome)
                    unsent.pop(0)
        except ServerUnavailable as exc:
            result.server_unavailable = True
            if not self._server_down:
                self._server_down = True
                log.warning("mail_server_unavailable", error=str(exc), retry_in=self._outage_delay)
        else:
            if self._server_down:
                self._server_down = False
                log.info("mail_server_available")
            self._outage_delay = self._settings.mail_retry_seconds
        await self._record(outcomes, unsent, result)

    async def _send_one(self, connection: Connection, row_id: str) -> _Outcome:
        async with self._database.sessions() as session:
            row = await session.get(self._model, row_id)
            if row is None or row.sent_at is not None or row.failed_at is not None:
                return _Outcome(row_id, "gone")
            try:
                rendered = await self._render(session, row)
            except Exception as exc:
                log.exception("mail_render_failed", mail_id=row_id, kind=row.kind)
                return _Outcome(row_id, "failed", error=f"render: {exc!r}", permanent=True)
        if rendered is None:
            return _Outcome(row_id, "dropped")
        message = build_message(rendered.mail, self._settings.mail_from, row_id)
        await self._store(rendered.records)
        try:
            await connection.send(message)
        except MessageRefused as exc:
            await self._forget(rendered.records)
            return _Outcome(row_id, "failed", error=f"refused: {exc}", permanent=exc.permanent)
        except BaseException:
            await self._forget(rendered.records)
            raise
        return _Outcome(row_id, "sent", rendered=rendered)

    async def _store(self, records: list[Any]) -> None:
        if records:
            async with self._database.unit_of_work() as session:
                session.add_all(records)

    async def _forget(self, records: list[Any]) -> None:
        if records:
            async with self._database.unit_of_work() as session:
                for record in records:
                    await session.delete(await session.merge(record))

    async def _record(self, outcomes: list[_Outcome], unsent: list[str], result: MailPass) -> None:
        model = self._model
        now = utcnow()
        async with self._database.unit_of_work() as session:
            for outcome in outcomes:
                if outcome.status == "dropped":
                    await session.execute(delete(model).where(model.id == outcome.row_id))
                    result.dropped += 1
                    continue
                row = await session.get(model, outcome.row_id)
                if row is None or outcome.status == "gone":
                    continue
                if outcome.status == "sent":
                    row.sent_at = now
                    row.next_attempt_at = None
                    result.sent += 1
                    log.info("mail_sent", mail_id=row.id, kind=row.kind)
                else:
                    self._retry_or_fail(row, outcome, result)
            if unsent:
                retry_at = now + timedelta(seconds=self._outage_delay)
                for row_id in unsent:
                    row = await session.get(model, row_id)
                    if row is not None:
                        row.next_attempt_at = retry_at
                self._outage_delay = min(
                    max(self._outage_delay * 2, self._settings.mail_retry_seconds),
                    self._settings.mail_retry_max_seconds,
                )

    def _retry_or_fail(self, row: Any, outcome: _Outcome, result: MailPass) -> None:
        row.attempts += 1
        row.last_error = (outcome.error or "")[:LAST_ERROR_LENGTH]
        if outcome.permanent and row.attempts >= self._settings.mail_max_attempts:
            row.failed_at = utcnow()
            row.next_attempt_at = None
            result.failed += 1
            log.error(
                "mail_failed",
                mail_id=row.id,
                kind=row.kind,
                attempts=row.attempts,
                error=row.last_error,
            )
            return
        delay = min(
            self._settings.mail_retry_seconds * 2 ** (row.attempts - 1),
            self._settings.mail_retry_max_seconds,
        )
        row.next_attempt_at = utcnow() + timedelta(seconds=delay)
        result.retried += 1
        log.warning(
            "mail_send_failed",
            mail_id=row.id,
            kind=row.kind,
            attempt=row.attempts,
            retry_in=delay,
            error=row.last_error,
        )
