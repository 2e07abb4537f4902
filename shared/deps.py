"""The dependencies every service's routes use, as `Annotated` aliases.

`SessionDep` is the request's unit of work: committed when the handler returns, rolled
back when it raises, before the response is sent. Routes and services never commit.
"""

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from shared.pagination import PageParams, page_params
from shared.security import Identity, current_identity, optional_identity, require_admin
from shared.service import Collaborators

CollaboratorsT = TypeVar("CollaboratorsT", bound=Collaborators[Any])


def get_collaborators(request: Request) -> Collaborators[Any]:
    collaborators: Collaborators[Any] = request.app.state.collaborators
    return collaborators


def collaborators_of(kind: type[CollaboratorsT]) -> Callable[[Request], CollaboratorsT]:
    """A dependency giving a service's own collaborators, typed as that service's class."""

    def dependency(request: Request) -> CollaboratorsT:
        collaborators = request.app.state.collaborators
        assert isinstance(collaborators, kind)
        return collaborators

    return dependency


CollaboratorsDep = Annotated[Collaborators[Any], Depends(get_collaborators)]


async def request_session(collaborators: CollaboratorsDep) -> AsyncIterator[AsyncSession]:
    async with collaborators.database.unit_of_work() as session:
        yield session


# scope="function": the commit happens before the response goes out, so that a client
# never sees a success for a change that then failed to commit.
SessionDep = Annotated[AsyncSession, Depends(request_session, scope="function")]
CurrentIdentity = Annotated[Identity, Depends(current_identity)]
OptionalIdentity = Annotated[Identity | None, Depends(optional_identity)]
AdminIdentity = Annotated[Identity, Depends(require_admin)]
PageDep = Annotated[PageParams, Depends(page_params)]
