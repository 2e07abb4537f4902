from pydantic import Field, field_validator

from shared.registry import CHAT, DOCUMENTS, local_url
from shared.settings import ServiceSettings

DEVELOPMENT_MODEL = "lyceum-dev"


class ChatSettings(ServiceSettings):
    service_name: str = CHAT.name
    port: int = CHAT.port

    # Any OpenAI-compatible Chat Completions server (OpenAI, vLLM, Ollama, llama.cpp's
    # server, LM Studio, LiteLLM). Unset: the built-in offline model `lyceum-dev` answers.
    chat_provider_base_url: str | None = None
    chat_provider_api_key: str | None = None
    # Comma-separated model ids; empty: read from the provider's `GET /models`.
    chat_provider_models: str = ""
    chat_default_model: str | None = None
    # The context window of a provider's model when its `/models` entry does not say.
    chat_context_window: int = Field(default=8192, ge=256)
    chat_provider_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # The longest pause allowed between two pieces of an answer (and before the first).
    chat_provider_read_timeout_seconds: float = Field(default=60.0, gt=0)
    # Attempts again when no token has arrived yet; a stream that has started is never re-sent.
    chat_provider_max_retries: int = Field(default=2, ge=0, le=10)
    # The offline model's pause between two words.
    chat_dev_word_delay_seconds: float = Field(default=0.02, ge=0)

    # Tokens per user per UTC day (0: no limit).
    chat_daily_token_limit: int = Field(default=0, ge=0)
    chat_max_concurrent_streams: int = Field(default=3, ge=1)
    # How long a finished answer can be replayed from the stream buffer.
    chat_stream_retention_seconds: int = Field(default=3600, ge=60)
    # A generation running longer than this is stopped and saved with finish_reason "length".
    chat_generation_timeout_seconds: float = Field(default=600.0, gt=0)

    # The documents service, asked for passages when a message says `use_documents`.
    documents_url: str = local_url(DOCUMENTS)
    # How many passages (the best-ranked first) a reply is given as sources.
    chat_documents_max_sources: int = Field(default=5, ge=1, le=50)
    # The longest a search of the user's documents may take; past it the message is 504.
    chat_documents_timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("chat_provider_base_url", "chat_provider_api_key", "chat_default_model")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @property
    def provider_models(self) -> list[str]:
        return [model.strip() for model in self.chat_provider_models.split(",") if model.strip()]
