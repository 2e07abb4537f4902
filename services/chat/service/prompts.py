"""System prompts with immutable versions and movable labels. Admins write; everyone reads
the published versions (those a label points at)."""

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.chat.models import Prompt, PromptLabel, PromptVersion
from shared.db import begin_writing, utcnow
from shared.errors import Conflict, NotFound
from shared.pagination import PageParams, Pagination, paginate
from shared.security import Identity

PRODUCTION = "production"


@dataclass(frozen=True)
class ResolvedPrompt:
    name: str
    version: int
    content: str


async def _prompt(session: AsyncSession, name: str, *, lock: bool = False) -> Prompt:
    query = select(Prompt).where(Prompt.name == name)
    if lock:
        await begin_writing(session)
        query = query.with_for_update()
    prompt = await session.scalar(query)
    if prompt is None:
        raise NotFound("Prompt not found")
    return prompt


async def _labels(session: AsyncSession, prompt: Prompt) -> dict[str, int]:
    rows = await session.execute(
        select(PromptLabel.label, PromptLabel.version)
        .where(PromptLabel.prompt_id == prompt.id)
        .order_by(PromptLabel.label)
    )
    return dict(rows.all())


def _version_view(name: str, version: PromptVersion, labels: dict[str, int]) -> dict[str, Any]:
    return {
        "name": name,
        "version": version.version,
        "content": version.content,
        "labels": sorted(label for label, number in labels.items() if number == version.version),
        "created_at": version.created_at,
    }


def _prompt_view(prompt: Prompt, version: PromptVersion, labels: dict[str, int]) -> dict[str, Any]:
    return _version_view(prompt.name, version, labels) | {
        "description": prompt.description,
        "latest_version": prompt.latest_version,
        "all_labels": labels,
        "created_at": prompt.created_at,
        "updated_at": prompt.updated_at,
    }


async def create_prompt(
    session: AsyncSession, identity: Identity, name: str, content: str, description: str | None
) -> dict[str, Any]:
    if await session.scalar(select(Prompt.id).where(Prompt.name == name)) is not None:
        raise Conflict(f"A prompt named {name} exists", details={"field": "name"})
    prompt = Prompt(id=uuid.uuid4(), name=name, description=description, latest_version=1)
    version = PromptVersion(
        prompt_id=prompt.id, version=1, content=content, created_by=identity.user_id
    )
    session.add(prompt)
    await session.flush()
    session.add_all([version, PromptLabel(prompt_id=prompt.id, label=PRODUCTION, version=1)])
    await session.flush()
    return _prompt_view(prompt, version, {PRODUCTION: 1})


async def add_version(
    session: AsyncSession, identity: Identity, name: str, content: str
) -> dict[str, Any]:
    prompt = await _prompt(session, name, lock=True)
    prompt.latest_version += 1
    version = PromptVersion(
        prompt_id=prompt.id,
        version=prompt.latest_version,
        content=content,
        created_by=identity.user_id,
    )
    session.add(version)
    await session.flush()
    return _version_view(name, version, await _labels(session, prompt))


async def move_label(session: AsyncSession, name: str, label: str, version: int) -> dict[str, Any]:
    prompt = await _prompt(session, name, lock=True)
    if version > prompt.latest_version:
        raise NotFound(
            f"Prompt {name} has no version {version}",
            details={"field": "version", "issue": f"between 1 and {prompt.latest_version}"},
        )
    row = await session.get(PromptLabel, (prompt.id, label))
    if row is None:
        session.add(PromptLabel(prompt_id=prompt.id, label=label, version=version))
    else:
        row.version = version
    prompt.updated_at = utcnow()
    await session.flush()
    return {"name": name, "label": label, "version": version}


def _published_only(identity: Identity) -> bool:
    return not identity.is_admin


async def get_prompt(
    session: AsyncSession,
    identity: Identity,
    name: str,
    *,
    version: int | None,
    label: str | None,
) -> dict[str, Any]:
    prompt = await _prompt(session, name)
    labels = await _labels(session, prompt)
    if label is not None and version is not None and labels.get(label) != version:
        raise NotFound(f"Version {version} of prompt {name} is not labelled {label}")
    if version is None:
        version = labels.get(label or PRODUCTION)
        if version is None:
            raise NotFound(f"Prompt {name} has no label {label or PRODUCTION}")
    elif _published_only(identity) and version not in labels.values():
        raise NotFound(f"Prompt {name} has no published version {version}")
    row = await session.scalar(
        select(PromptVersion).where(
            PromptVersion.prompt_id == prompt.id, PromptVersion.version == version
        )
    )
    if row is None:
        raise NotFound(f"Prompt {name} has no version {version}")
    return _prompt_view(prompt, row, labels)


async def list_versions(
    session: AsyncSession, identity: Identity, name: str, page: PageParams
) -> tuple[list[dict[str, Any]], Pagination]:
    prompt = await _prompt(session, name)
    labels = await _labels(session, prompt)
    query = select(PromptVersion).where(PromptVersion.prompt_id == prompt.id)
    if _published_only(identity):
        query = query.where(PromptVersion.version.in_(set(labels.values())))
    rows, pagination = await paginate(session, query.order_by(PromptVersion.version.desc()), page)
    return [_version_view(name, row, labels) for row in rows], pagination


async def list_prompts(
    session: AsyncSession, identity: Identity, page: PageParams, search: str | None
) -> tuple[list[dict[str, Any]], Pagination]:
    query = select(Prompt)
    if search:
        query = query.where(Prompt.name.icontains(search, autoescape=True))
    if _published_only(identity):
        query = query.where(Prompt.id.in_(select(PromptLabel.prompt_id)))
    rows, pagination = await paginate(session, query.order_by(Prompt.name), page)
    labels_of: dict[uuid.UUID, dict[str, int]] = {row.id: {} for row in rows}
    if rows:
        found = await session.execute(
            select(PromptLabel.prompt_id, PromptLabel.label, PromptLabel.version).where(
                PromptLabel.prompt_id.in_(labels_of)
            )
        )
        for prompt_id, label, version in found:
            labels_of[prompt_id][label] = version
    views = [
        {
            "name": row.name,
            "description": row.description,
            "latest_version": row.latest_version,
            "labels": dict(sorted(labels_of[row.id].items())),
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
        for row in rows
    ]
    return views, pagination


async def require_prompt(session: AsyncSession, name: str) -> None:
    """A conversation may name only a prompt that exists (404 otherwise)."""
    if await session.scalar(select(Prompt.id).where(Prompt.name == name)) is None:
        raise NotFound(f"No prompt named {name}", details={"field": "prompt"})


async def resolve(session: AsyncSession, name: str) -> ResolvedPrompt | None:
    """The version the `production` label points at now; None if the prompt is gone."""
    row = await session.execute(
        select(PromptVersion.version, PromptVersion.content)
        .join(Prompt, Prompt.id == PromptVersion.prompt_id)
        .join(
            PromptLabel,
            (PromptLabel.prompt_id == Prompt.id) & (PromptLabel.version == PromptVersion.version),
        )
        .where(Prompt.name == name, PromptLabel.label == PRODUCTION)
    )
    found = row.first()
    return ResolvedPrompt(name, found.version, found.content) if found else None
