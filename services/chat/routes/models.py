from typing import Any

from fastapi import APIRouter

from services.chat.deps import ChatDep
from services.chat.schemas import ModelList
from shared.deps import CurrentIdentity
from shared.openapi import error_responses

router = APIRouter(prefix="/api/v1/models", tags=["chat"])


@router.get("", response_model=ModelList, responses=error_responses(502))
async def list_models(_identity: CurrentIdentity, chat: ChatDep) -> dict[str, Any]:
    """The models replies can use; `default` marks the one used when none is named."""
    models = await chat.catalogue.models()
    default = await chat.catalogue.default_model()
    return {
        "data": [
            {
                "id": model.id,
                "owned_by": model.owned_by,
                "context_window": model.context_window,
                "default": model.id == default,
                "description": model.description,
            }
            for model in models
        ]
    }
