"""The HTTP and WebSocket API; each module calls its namesake in `service/`."""

from fastapi import APIRouter

from services.chat.routes import chat, conversations, messages, models, prompts, websocket

routers: list[APIRouter] = [
    models.router,
    conversations.router,
    messages.router,
    chat.router,
    prompts.router,
    websocket.router,
]
