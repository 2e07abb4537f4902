"""The dependencies every service's routes use, as `Annotated` aliases.

`SessionDep` is the request's unit of work: committed when the handler returns, rolled
back when it raises, before the response is sent. Routes and services never commit. A GET,
HEAD or OPTIONS request's session only reads (`Database.reading`).
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from shared.pagination import PageParams, page_params
from shared.security import Identity, current_identity, optional_identity, require_admin
from shared.service import Collaborators

CollaboratorsT = TypeVar("CollaboratorsT", bound=Collaborators[Any])


# Dependencies are `async def` even when they await nothing: FastAPI runs a plain `def` one
# in its thread pool, a thread hop on every request.
async def get_collaborators(request: Request) -> Collaborators[Any]:
    collaborators: Collaborators[Any] = request.app.state.collaborators
    return collaborators


def collaborators_of(
    kind: type[CollaboratorsT],
) -> Callable[[Request], Awaitable[CollaboratorsT]]:
    """A dependency giving a service's own collaborators, typed as that service's class."""

    async def dependency(request: Request) -> CollaboratorsT:
        collaborators = request.app.state.collaborators
        assert isinstance(collaborators, kind)
        return collaborators

    return dependency


CollaboratorsDep = Annotated[Collaborators[Any], Depends(get_collaborators)]


# Methods that must not change anything (RFC 9110 "safe"): their session only reads.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def request_session(request: Request) -> AsyncIterator[AsyncSession]:
    database = (await get_collaborators(request)).database
    if request.method in SAFE_METHODS:
        async with database.reading() as session:
            yield session
        return
    async with database.unit_of_work() as session:
        yield session


# scope="function": the commit happens before the response goes out, so that a client
# never sees a success for a change that then failed to commit.
SessionDep = Annotated[AsyncSession, Depends(request_session, scope="function")]
CurrentIdentity = Annotated[Identity, Depends(current_identity)]
OptionalIdentity = Annotated[Identity | None, Depends(optional_identity)]
AdminIdentity = Annotated[Identity, Depends(require_admin)]
PageDep = Annotated[PageParams, Depends(page_params)]
