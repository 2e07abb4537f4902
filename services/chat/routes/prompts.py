"""System prompts: admins write, everyone reads the published versions."""

from typing import Any

from fastapi import APIRouter, Path, Query, Response

from services.chat.schemas import (
    LABEL_PATTERN,
    PROMPT_NAME_PATTERN,
    Label,
    LabelMove,
    LabelResponse,
    PromptCreate,
    PromptResponse,
    PromptSummary,
    PromptVersionCreate,
    PromptVersionResponse,
)
from services.chat.service import prompts
from shared.deps import AdminIdentity, CurrentIdentity, PageDep, SessionDep
from shared.pagination import Page
from shared.text import Text

router = APIRouter(prefix="/api/v1/prompts", tags=["prompts"])

PromptPath = Path(pattern=PROMPT_NAME_PATTERN, description="The prompt's name")


@router.get("", response_model=Page[PromptSummary])
async def list_prompts(
    identity: CurrentIdentity,
    session: SessionDep,
    page: PageDep,
    search: Text | None = Query(None, max_length=100, description="Part of a name"),
) -> dict[str, Any]:
    rows, pagination = await prompts.list_prompts(session, identity, page, search)
    return {"data": rows, "pagination": pagination}


@router.post("", status_code=201, response_model=PromptResponse)
async def create_prompt(
    body: PromptCreate, identity: AdminIdentity, session: SessionDep, response: Response
) -> dict[str, Any]:
    """Creates version 1, labelled `production`."""
    view = await prompts.create_prompt(session, identity, body.name, body.content, body.description)
    response.headers["Location"] = f"/api/v1/prompts/{body.name}"
    return view


@router.get("/{name}", response_model=PromptResponse)
async def get_prompt(
    identity: CurrentIdentity,
    session: SessionDep,
    name: str = PromptPath,
    version: int | None = Query(None, ge=1, le=1_000_000),
    label: Label | None = Query(None, pattern=LABEL_PATTERN),
) -> dict[str, Any]:
    """One version of the prompt: `?version=`, `?label=`, or the `production` one."""
    return await prompts.get_prompt(session, identity, name, version=version, label=label)


@router.get("/{name}/versions", response_model=Page[PromptVersionResponse])
async def list_versions(
    identity: CurrentIdentity, session: SessionDep, page: PageDep, name: str = PromptPath
) -> dict[str, Any]:
    rows, pagination = await prompts.list_versions(session, identity, name, page)
    return {"data": rows, "pagination": pagination}


@router.post("/{name}/versions", status_code=201, response_model=PromptVersionResponse)
async def add_version(
    body: PromptVersionCreate,
    identity: AdminIdentity,
    session: SessionDep,
    response: Response,
    name: str = PromptPath,
) -> dict[str, Any]:
    """Adds version n+1; versions never change once written."""
    view = await prompts.add_version(session, identity, name, body.content)
    response.headers["Location"] = f"/api/v1/prompts/{name}?version={view['version']}"
    return view


@router.put("/{name}/labels/{label}", response_model=LabelResponse)
async def move_label(
    body: LabelMove,
    _identity: AdminIdentity,
    session: SessionDep,
    name: str = PromptPath,
    label: str = Path(pattern=LABEL_PATTERN),
) -> dict[str, Any]:
    """Points the label at a version; replies use the version `production` points at."""
    return await prompts.move_label(session, name, label, body.version)
