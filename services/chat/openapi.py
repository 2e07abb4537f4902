"""What chat's OpenAPI document says beyond its schemas: the events of its streams, and the
models a request may name when they are known before any request (the offline model, or
CHAT_PROVIDER_MODELS)."""

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from services.chat.settings import DEVELOPMENT_MODEL, ChatSettings

SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["chat_delta", "chat_response", "error"]},
        "data": {
            "type": "string",
            "description": 'JSON: chat_delta {"id", "delta"}; chat_response the saved reply '
            "(as POST /chat answers, with finish_reason and citations: the sources of a reply "
            'asked with use_documents, [1] first); error {"code", "message"}',
        },
        "id": {"type": "string", "description": "The length of the answer so far"},
        "retry": {"type": "integer", "minimum": 0},
    },
}


def sse_answer(description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": description,
            "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
        }
    }


# The request bodies whose `model` names one of the models.
MODEL_REQUESTS = (
    "ConversationCreate",
    "ConversationUpdate",
    "ConversationPatch",
    "MessageCreate",
    "ChatRequest",
    "RegenerateOptions",
)


def known_models(settings: ChatSettings) -> list[str] | None:
    if not settings.chat_provider_base_url:
        return [DEVELOPMENT_MODEL]
    return settings.provider_models or None


def document_models(app: FastAPI, settings: ChatSettings) -> None:
    models = known_models(settings)
    if not models:
        return
    build: Callable[[], dict[str, Any]] = app.openapi
    done = False

    def openapi() -> dict[str, Any]:
        nonlocal done
        document = build()
        if not done:
            schemas = document.get("components", {}).get("schemas", {})
            for name in MODEL_REQUESTS:
                model = schemas.get(name, {}).get("properties", {}).get("model")
                if model is not None:
                    _name_models(model, models)
            done = True
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _name_models(schema: dict[str, Any], models: list[str]) -> None:
    choices = schema.get("anyOf")
    for choice in choices if choices else [schema]:
        if choice.get("type") == "string":
            choice["enum"] = list(models)
