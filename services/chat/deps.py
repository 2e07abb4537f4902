"""What chat builds beyond the shared collaborators: the model catalogue, the reply streams,
the per-user generation slots, the generator that runs replies and the client of the
documents service."""

import asyncio
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends

from services.chat.documents import DocumentsClient
from services.chat.generation import ReplyGenerator, end_abandoned
from services.chat.providers.catalogue import ModelCatalogue
from services.chat.settings import ChatSettings
from services.chat.slots import GenerationSlots
from services.chat.streams import ReplyStreams
from services.chat.tokens import encoding
from shared.deps import collaborators_of
from shared.errors import AuthenticationRequired
from shared.health import ReadinessCheck
from shared.security import BearerCredentials, KeySource
from shared.service import Collaborators
from shared.wakeups import WakeOnCommitLoop

# How often replies left generating by a process that died are looked for.
SWEEP_SECONDS = 60.0
# At shutdown, the part of the drain kept for saving the replies stopped at its end and
# closing the WebSockets.
REPLY_SAVE_SECONDS = 2.0


class ChatCollaborators(Collaborators[ChatSettings]):
    def __init__(self, settings: ChatSettings, *, key_source: KeySource | None = None) -> None:
        super().__init__(settings, key_source=key_source)
        self.catalogue = ModelCatalogue(settings)
        self.streams = ReplyStreams(
            settings.redis_url, settings.queue_prefix, settings.chat_stream_retention_seconds
        )
        self.slots = GenerationSlots(
            settings.redis_url,
            settings.queue_prefix,
            settings.chat_max_concurrent_streams,
            settings.chat_generation_timeout_seconds,
        )
        self.generator = ReplyGenerator(
            self.database, self.catalogue, self.streams, self.slots, settings
        )
        self.documents = DocumentsClient(
            settings.documents_url,
            timeout_seconds=settings.chat_documents_timeout_seconds,
            max_sources=settings.chat_documents_max_sources,
        )
        abandoned_after = timedelta(seconds=settings.chat_generation_timeout_seconds + 60)
        self.sweeper = WakeOnCommitLoop(
            self.database,
            "chat.abandoned_replies",
            lambda: self._end_abandoned(abandoned_after),
            poll_seconds=SWEEP_SECONDS,
            name="chat-abandoned-replies",
        )
        # The tasks serving the open WebSockets.
        self.sockets: set[asyncio.Task[Any]] = set()

    async def _end_abandoned(self, older_than: timedelta) -> None:
        await end_abandoned(self.database, older_than)

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        return super().readiness_checks() | {"reply_streams": self.streams.ping}

    async def start(self) -> None:
        await super().start()
        encoding()  # loads the tokenizer's vocabulary now rather than in the first request
        await self.streams.start()
        self.sweeper.start()
        self.shutdown.on_drain(self._drain)

    async def _drain(self) -> None:
        """Readers of replies generated on other replicas are told to go away (they resume
        there); replies generated here go on while the drain allows, then stop and are
        saved with what they have; each WebSocket closes (1012) once its replies ended."""
        self.streams.go_away()
        left = self.shutdown.drain_remaining()
        keep = min(REPLY_SAVE_SECONDS, left / 2)
        await self.generator.wind_down(finish_within=left - keep, save_within=keep / 2)
        if self.sockets:
            await asyncio.wait(set(self.sockets), timeout=self.shutdown.drain_remaining())

    async def stop(self) -> None:
        try:
            await self.sweeper.stop()
            await self.generator.close()
            await self.streams.close()
            await self.slots.close()
            await self.catalogue.close()
            await self.documents.close()
        finally:
            await super().stop()


ChatDep = Annotated[ChatCollaborators, Depends(collaborators_of(ChatCollaborators))]


async def access_token(credentials: BearerCredentials) -> str:
    """The bearer token the request came with (`CurrentIdentity` verifies it), to ask the
    documents service on the user's behalf."""
    if credentials is None:
        raise AuthenticationRequired()
    return credentials.credentials


AccessToken = Annotated[str, Depends(access_token)]
