"""Any server that speaks OpenAI's Chat Completions: OpenAI, vLLM, Ollama, llama.cpp's
server, LM Studio, LiteLLM. Always streamed, with the usage report asked for; retried only
while no token has arrived, so that an answer that has started is never asked for twice."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx2
import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from services.chat.providers.base import (
    CompletionRequest,
    ModelInfo,
    Piece,
    ProviderFailed,
    ProviderTimedOut,
    Usage,
)
from shared.logging import get_logger

log = get_logger(__name__)

# Statuses worth another attempt: the request was not taken up, or the server is busy.
RETRIED_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}
# Where OpenAI-compatible servers put a model's context window in `GET /models`.
CONTEXT_WINDOW_FIELDS = ("context_window", "context_length", "max_model_len", "max_context_length")


class OpenAICompatibleProvider:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_retries: int,
        default_context_window: int,
    ) -> None:
        self._client = AsyncOpenAI(
            base_url=base_url,
            # A local server needs none; the client insists on a value.
            api_key=api_key or "none",
            timeout=openai.Timeout(read_timeout, connect=connect_timeout),
            max_retries=0,
        )
        self._max_retries = max_retries
        self._default_context_window = default_context_window
        self.host = httpx2.URL(base_url).host

    async def models(self) -> list[ModelInfo]:
        try:
            page = await self._client.models.list()
        except openai.APIError as exc:
            raise _failure(exc) from exc
        return [self._model_info(model) for model in page.data]

    def _model_info(self, model: Any) -> ModelInfo:
        extra: dict[str, Any] = model.model_extra or {}
        window = next(
            (extra[name] for name in CONTEXT_WINDOW_FIELDS if isinstance(extra.get(name), int)),
            self._default_context_window,
        )
        return ModelInfo(model.id, model.owned_by or self.host or "provider", window)

    def model_info(self, model_id: str) -> ModelInfo:
        """A model named in configuration rather than read from the provider."""
        return ModelInfo(model_id, self.host or "provider", self._default_context_window)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Piece]:
        attempt = 0
        while True:
            started = False
            try:
                async for piece in self._attempt(request):
                    started = started or bool(piece.text)
                    yield piece
                return
            except (openai.APIError, httpx2.HTTPError) as exc:
                failure = _failure(exc)
                if started or attempt >= self._max_retries or not _retried(exc):
                    raise failure from exc
                attempt += 1
                log.warning("provider_retry", attempt=attempt, error=str(failure))
                await asyncio.sleep(min(0.25 * 2**attempt, 4.0))

    async def _attempt(self, request: CompletionRequest) -> AsyncIterator[Piece]:
        options: dict[str, Any] = {}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.max_tokens is not None:
            options["max_tokens"] = request.max_tokens
        chunks = await self._client.chat.completions.create(
            model=request.model,
            messages=cast("list[ChatCompletionMessageParam]", request.messages),
            stream=True,
            stream_options={"include_usage": True},
            **options,
        )
        try:
            async for chunk in chunks:
                usage = None
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                choice = chunk.choices[0] if chunk.choices else None
                text = (choice.delta.content or "") if choice is not None else ""
                finish_reason = choice.finish_reason if choice is not None else None
                if text or finish_reason or usage:
                    yield Piece(text=text, finish_reason=finish_reason, usage=usage)
        finally:
            await chunks.close()

    async def close(self) -> None:
        await self._client.close()


def _retried(exc: Exception) -> bool:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRIED_STATUSES
    return isinstance(exc, openai.APIConnectionError | httpx2.TransportError)


def _failure(exc: Exception) -> ProviderFailed:
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        return ProviderTimedOut("The AI provider did not answer in time")
    if isinstance(exc, openai.APIStatusError):
        return ProviderFailed(f"The AI provider answered {exc.status_code}")
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        return ProviderFailed("The AI provider could not be reached")
    return ProviderFailed("The AI provider's answer broke off")
