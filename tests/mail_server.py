"""A real SMTP server on this machine (aiosmtpd, in a thread of its own) that keeps what it
receives, for the tests of the mail Lyceum sends. It can be stopped and started again on the
same port, as an outage of the mail server."""

import asyncio
import email
import email.policy
import re
import threading
import time
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from shared.testing import free_port_block

TOKEN = re.compile(r"token=([A-Za-z0-9_-]+)")


class _Keeper:
    def __init__(self, server: "MailServer") -> None:
        self._server = server

    async def handle_RCPT(
        self,
        _smtp: SMTP,
        _session: Session,
        envelope: Envelope,
        address: str,
        _options: list[str],
    ) -> str:
        if address.lower() in self._server.refused:
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _smtp: SMTP, _session: Session, envelope: Envelope) -> str:
        content = envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self._server.keep(list(envelope.rcpt_tos), message)
        return "250 Message accepted for delivery"


class MailServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port_block(1)
        self._received: list[tuple[list[str], EmailMessage]] = []
        # Addresses refused for good (550), as a server does a mailbox it does not have.
        self.refused: set[str] = set()
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> "MailServer":
        self._controller = Controller(
            _Keeper(self), hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=True
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def keep(self, recipients: list[str], message: EmailMessage) -> None:
        with self._lock:
            self._received.append((recipients, message))

    def messages_to(self, address: str) -> list[EmailMessage]:
        """What arrived for this address, oldest first."""
        with self._lock:
            return [
                message
                for recipients, message in self._received
                if address.lower() in (r.lower() for r in recipients)
            ]

    async def wait_for(
        self, address: str, count: int = 1, within_seconds: float = 20.0
    ) -> list[EmailMessage]:
        """The first `count` messages to the address, once they have arrived."""
        deadline = time.monotonic() + within_seconds
        while True:
            messages = self.messages_to(address)
            if len(messages) >= count:
                return messages[:count]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(messages)} of {count} mails to {address} within {within_seconds}s"
                )
            await asyncio.sleep(0.05)


def text_of(message: EmailMessage) -> str:
    body: Any = message.get_body(("plain",))
    assert body is not None, message
    text: str = body.get_content()
    return text


def token_in(message: EmailMessage) -> str:
    """The token of the (first) link in the mail."""
    found = TOKEN.search(text_of(message))
    assert found is not None, text_of(message)
    return found.group(1)
