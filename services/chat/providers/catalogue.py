"""The models that can be used, and the provider that serves each."""

import time

from services.chat.providers.base import ChatProvider, ModelInfo, ProviderFailed
from services.chat.providers.development import DevelopmentModel
from services.chat.providers.openai_compatible import OpenAICompatibleProvider
from services.chat.settings import ChatSettings
from shared.errors import ProviderError, ValidationFailed

# How long a model list read from the provider's `GET /models` is trusted.
MODELS_CACHE_SECONDS = 300.0


class ModelCatalogue:
    def __init__(self, settings: ChatSettings) -> None:
        self._settings = settings
        self.provider: ChatProvider
        self._configured: list[ModelInfo] | None
        if settings.chat_provider_base_url:
            remote = OpenAICompatibleProvider(
                settings.chat_provider_base_url,
                settings.chat_provider_api_key,
                connect_timeout=settings.chat_provider_connect_timeout_seconds,
                read_timeout=settings.chat_provider_read_timeout_seconds,
                max_retries=settings.chat_provider_max_retries,
                default_context_window=settings.chat_context_window,
            )
            self.provider = remote
            configured = settings.provider_models
            self._configured = [remote.model_info(m) for m in configured] if configured else None
        else:
            development = DevelopmentModel(settings.chat_dev_word_delay_seconds)
            self.provider = development
            self._configured = [development.info]
        self._fetched: list[ModelInfo] = []
        self._fetched_at = -MODELS_CACHE_SECONDS

    async def models(self) -> list[ModelInfo]:
        """502 when the list must come from a provider that fails."""
        if self._configured is not None:
            return self._configured
        if time.monotonic() - self._fetched_at >= MODELS_CACHE_SECONDS:
            try:
                self._fetched = await self.provider.models()
            except ProviderFailed as exc:
                raise ProviderError(f"The model list could not be read: {exc}") from exc
            self._fetched_at = time.monotonic()
        return self._fetched

    async def default_model(self) -> str:
        if self._settings.chat_default_model:
            return self._settings.chat_default_model
        models = await self.models()
        if not models:
            raise ProviderError("The AI provider lists no model")
        return models[0].id

    async def resolve(self, model_id: str | None) -> ModelInfo:
        """The model a request names (or the default); an unknown one is 400."""
        wanted = model_id or await self.default_model()
        for model in await self.models():
            if model.id == wanted:
                return model
        if model_id is None and isinstance(self.provider, OpenAICompatibleProvider):
            # CHAT_DEFAULT_MODEL names a model the provider serves without listing it.
            return self.provider.model_info(wanted)
        raise ValidationFailed(
            f"Unknown model: {wanted}",
            details={"field": "model", "issue": "not one of GET /api/v1/models"},
        )

    async def close(self) -> None:
        await self.provider.close()
