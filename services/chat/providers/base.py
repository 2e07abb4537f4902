from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from services.chat.sources import Source
from services.chat.tokens import ChatTurn


@dataclass(frozen=True)
class ModelInfo:
    id: str
    owned_by: str
    context_window: int
    description: str | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    messages: list[ChatTurn]
    temperature: float | None = None
    max_tokens: int | None = None
    # The passages of the user's documents in the system message (`sources.system_turn`),
    # in their numbers' order; None when the documents were not searched.
    sources: tuple[Source, ...] | None = None


@dataclass(frozen=True)
class Piece:
    """One piece of a streamed answer: some text, or the end (`finish_reason`), or the
    provider's usage report; a piece may carry several of these."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


class ProviderFailed(Exception):
    """The provider refused or broke the request."""


class ProviderTimedOut(ProviderFailed):
    """No answer, or no next piece of one, within the read timeout."""


class ChatProvider(Protocol):
    async def models(self) -> list[ModelInfo]: ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[Piece]: ...

    async def close(self) -> None: ...
