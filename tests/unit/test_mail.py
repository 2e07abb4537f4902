"""Mail through the queue in the database and a real SMTP server on this machine (aiosmtpd):
sent after the commit that queued it, rendered when it is sent (what the renderer stores comes
only with a delivered mail), never lost to an outage of the server, set aside after a
permanent refusal, and written as .eml files (its links logged) without SMTP_URL."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import Database, new_metadata, utcnow
from shared.logging import configure_logging
from shared.mail import (
    FileTransport,
    Mail,
    MailOutboxMixin,
    MailQueue,
    MailRelay,
    MailSettings,
    RenderedMail,
    SmtpServer,
    transport_for,
)
from shared.testing import eventually, free_port_block
from tests.conftest import LogLines
from tests.mail_server import MailServer, text_of


class Base(DeclarativeBase):
    metadata = new_metadata()


class Outgoing(MailOutboxMixin, Base):
    __tablename__ = "mail_outbox"


class Delivered(Base):
    """What the renderer wants stored once its mail is out (a link's token hash, in auth)."""

    __tablename__ = "delivered"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    mail: Mapped[str] = mapped_column(String(36))


queue = MailQueue(Outgoing)


async def render(_session: AsyncSession, row: Any) -> RenderedMail | None:
    params = row.parameters()
    if params.get("decline"):
        return None
    link = f"http://127.0.0.1:8000/verify-email?token={params.get('token', 'abc')}"
    mail = Mail(row.recipient, f"Hello {params.get('n', '')}", f"Follow {link}\n")
    return RenderedMail(mail, records=[Delivered(id=str(uuid.uuid4()), mail=row.id)])


def settings(smtp_url: str | None, **overrides: Any) -> MailSettings:
    values: dict[str, Any] = {
        "smtp_url": smtp_url,
        "mail_from": "Lyceum <no-reply@lyceum.test>",
        "mail_poll_seconds": 0.2,
        "mail_retry_seconds": 0.05,
        "mail_retry_max_seconds": 0.2,
        "mail_max_attempts": 2,
        "smtp_timeout_seconds": 2.0,
    }
    values.update(overrides)
    return MailSettings(**values)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'mail.db'}")
    async with db.engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield db
    await db.dispose()


@pytest.fixture
def server() -> Iterator[MailServer]:
    mail_server = MailServer().start()
    yield mail_server
    mail_server.stop()


async def relay_for(database: Database, mail_settings: MailSettings, tmp_path: Path) -> MailRelay:
    relay = MailRelay(
        database, queue, render, mail_settings, transport_for(mail_settings, tmp_path)
    )
    relay.start()
    return relay


async def queue_mails(database: Database, *recipients: str, **params: Any) -> None:
    async with database.unit_of_work() as session:
        for n, recipient in enumerate(recipients):
            queue.add(session, "hello", recipient, {"n": n, **params})


async def rows(database: Database) -> list[Outgoing]:
    async with database.sessions() as session:
        return list((await session.scalars(select(Outgoing))).all())


async def delivered_count(database: Database) -> int:
    async with database.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Delivered)) or 0)


def test_smtp_urls() -> None:
    assert SmtpServer.from_url("smtp://mail.internal:2525") == SmtpServer("mail.internal", 2525)
    assert SmtpServer.from_url("smtp://ada:p%40ss@mail:587?starttls=true") == SmtpServer(
        "mail", 587, "ada", "p@ss", start_tls=True
    )
    assert SmtpServer.from_url("smtps://ada:secret@mail") == SmtpServer(
        "mail", 465, "ada", "secret", use_tls=True
    )
    assert SmtpServer.from_url("smtp://mail").port == 25
    for bad in ("http://mail:25", "smtp://", "smtps://mail?starttls=true"):
        with pytest.raises(ValueError, match="SMTP_URL"):
            SmtpServer.from_url(bad)


async def test_queued_mail_is_sent_after_the_commit(
    database: Database, server: MailServer, tmp_path: Path
) -> None:
    relay = await relay_for(database, settings(server.url), tmp_path)
    try:
        await queue_mails(database, "ada@example.com")
        [message] = await server.wait_for("ada@example.com")
    finally:
        await relay.stop(grace_seconds=10)
    assert message["From"] == "Lyceum <no-reply@lyceum.test>"
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Hello 0"
    [row] = await rows(database)
    assert message["Message-ID"] == f"<{row.id}@lyceum.test>"
    assert "verify-email?token=abc" in text_of(message)
    assert row.sent_at is not None
    assert row.attempts == 0
    assert await delivered_count(database) == 1


async def test_an_smtp_outage_delays_mail_and_loses_none(
    database: Database, tmp_path: Path
) -> None:
    """Nothing listens on the server's port at first; the mail waits, retried, and arrives
    once the server is up."""
    server = MailServer(port=free_port_block(1))
    relay = await relay_for(database, settings(server.url), tmp_path)
    try:
        await queue_mails(database, "ada@example.com", "grace@example.com")

        async def retried() -> bool:
            # Put off by the back-off (a fraction of a second), not claimed for a send.
            soon = utcnow() + timedelta(seconds=1)
            pending = await rows(database)
            return all(
                row.next_attempt_at is not None and row.next_attempt_at < soon for row in pending
            )

        await eventually(retried)
        assert all(row.sent_at is None and row.failed_at is None for row in await rows(database))
        assert await delivered_count(database) == 0
        server.start()
        try:
            await server.wait_for("ada@example.com")
            await server.wait_for("grace@example.com")
        finally:
            server.stop()
    finally:
        await relay.stop(grace_seconds=10)
    assert all(row.sent_at is not None and row.attempts == 0 for row in await rows(database))
    assert await delivered_count(database) == 2


class HeldTransport(FileTransport):
    """Writes .eml files, each once `release` is set."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.sending = asyncio.Event()
        self.release = asyncio.Event()
        self.sent: list[str] = []

    async def send(self, message: EmailMessage) -> None:
        self.sending.set()
        await self.release.wait()
        await super().send(message)
        self.sent.append(str(message["To"]))


async def test_a_relay_stopped_while_sending_finishes_the_batch_and_records_it(
    database: Database, tmp_path: Path
) -> None:
    transport = HeldTransport(tmp_path / "mail")
    relay = MailRelay(database, queue, render, settings(None), transport)
    relay.start()
    await queue_mails(database, "ada@example.com", "grace@example.com")
    await asyncio.wait_for(transport.sending.wait(), 10)
    stopping = asyncio.create_task(relay.stop(grace_seconds=10))
    await asyncio.sleep(0)
    transport.release.set()
    await stopping
    assert sorted(transport.sent) == ["ada@example.com", "grace@example.com"]
    # Recorded as sent: a row left pending would be sent again once its claim ran out.
    assert all(row.sent_at is not None for row in await rows(database))
    assert await delivered_count(database) == 2


async def test_a_mail_the_renderer_declines_is_dropped(
    database: Database, server: MailServer, tmp_path: Path
) -> None:
    relay = await relay_for(database, settings(server.url), tmp_path)
    try:
        await queue_mails(database, "nobody@example.com", decline=True)
        await queue_mails(database, "ada@example.com")
        await server.wait_for("ada@example.com")

        async def dropped() -> bool:
            return len(await rows(database)) == 1

        await eventually(dropped)
    finally:
        await relay.stop(grace_seconds=10)
    assert server.messages_to("nobody@example.com") == []
    assert await delivered_count(database) == 1


async def test_a_permanently_refused_mail_is_set_aside_and_the_others_go(
    database: Database, server: MailServer, tmp_path: Path
) -> None:
    server.refused.add("gone@example.com")
    relay = await relay_for(database, settings(server.url), tmp_path)
    try:
        await queue_mails(database, "gone@example.com", "ada@example.com")
        await server.wait_for("ada@example.com")

        async def set_aside() -> bool:
            return any(row.failed_at is not None for row in await rows(database))

        await eventually(set_aside)
    finally:
        await relay.stop(grace_seconds=10)
    failed = next(row for row in await rows(database) if row.recipient == "gone@example.com")
    assert failed.attempts == 2
    assert failed.last_error is not None
    assert "550" in failed.last_error
    assert await delivered_count(database) == 1


async def test_without_smtp_url_mail_is_written_as_eml_and_its_links_logged(
    database: Database, tmp_path: Path, log_lines: LogLines
) -> None:
    configure_logging("auth", "INFO", "json")
    mail_settings = settings(None)
    assert isinstance(transport_for(mail_settings, tmp_path), FileTransport)
    relay = await relay_for(database, mail_settings, tmp_path)
    try:
        await queue_mails(database, "ada@example.com", token="t0ken")

        async def written() -> list[Path]:
            return list((tmp_path / "mail").glob("*.eml"))

        [path] = await eventually(written)
    finally:
        await relay.stop(grace_seconds=10)
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert message["To"] == "ada@example.com"
    [line] = [line for line in log_lines.read() if line["event"] == "mail_written"]
    assert line["links"] == ["http://127.0.0.1:8000/verify-email?token=t0ken"]
    assert line["path"] == str(path)
