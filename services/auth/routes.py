"""`/api/v1/auth`: accounts and logins; `/api/v1/auth/tokens`: API tokens for machine
clients; `/api/v1/auth/oauth2/token`: the same login for OAuth2 clients."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Response
from pydantic import ValidationError

from services.auth import service
from services.auth.deps import AuthDep, LoginIdentity
from services.auth.models import Account, ApiToken
from services.auth.schemas import (
    AccountResponse,
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenResponse,
    LoginRequest,
    RefreshRequest,
    RegisterRequest,
    TokenResponse,
)
from services.auth.tokens import IssuedTokens
from shared.deps import CurrentIdentity, PageDep, SessionDep
from shared.errors import ValidationFailed
from shared.openapi import error_responses
from shared.pagination import Page

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
api_tokens_router = APIRouter(prefix="/api/v1/auth/tokens", tags=["api tokens"])
# OAuth2 password grant (RFC 6749 §4.3) over the same login, so that OAuth2 clients and the
# "Authorize" button of the gateway's Swagger UI can log in with email and password.
oauth2_router = APIRouter(prefix="/api/v1/auth/oauth2", tags=["auth"])


def token_response(tokens: IssuedTokens) -> TokenResponse:
    return TokenResponse.model_validate(tokens, from_attributes=True)


@router.post("/register", status_code=201, response_model=AccountResponse)
async def register(body: RegisterRequest, response: Response, session: SessionDep) -> Account:
    account = await service.register(session, body)
    response.headers["Location"] = f"/api/v1/users/{account.id}"
    return account


@router.post("/login", response_model=TokenResponse, responses=error_responses(401, 403))
async def login(body: LoginRequest, session: SessionDep, auth: AuthDep) -> TokenResponse:
    return token_response(await service.login(session, auth.token_issuer, body))


@router.post("/refresh", response_model=TokenResponse, responses=error_responses(401, 403))
async def refresh(body: RefreshRequest, auth: AuthDep) -> TokenResponse:
    tokens = await service.refresh(auth.database, auth.token_issuer, body.refresh_token)
    return token_response(tokens)


@router.post("/logout", status_code=204)
async def logout(identity: CurrentIdentity, session: SessionDep, auth: AuthDep) -> Response:
    """Revokes this login's refresh-token family and denies the access token until it expires."""
    await service.logout(session, auth.token_issuer, auth.revocations, identity)
    return Response(status_code=204)


@router.get("/me", response_model=AccountResponse)
async def me(identity: CurrentIdentity, session: SessionDep) -> Account:
    return await service.get_account(session, identity.user_id)


@router.get("/.well-known/jwks.json", summary="Public keys that verify access tokens")
async def jwks(response: Response, auth: AuthDep) -> dict[str, Any]:
    response.headers["Cache-Control"] = "public, max-age=60"
    return await auth.key_ring.jwks()


@oauth2_router.post("/token", response_model=TokenResponse, responses=error_responses(401, 403))
async def oauth2_token(
    username: Annotated[str, Form(description="The account's email")],
    password: Annotated[str, Form()],
    session: SessionDep,
    auth: AuthDep,
    grant_type: Annotated[str, Form(pattern="^password$")] = "password",
) -> TokenResponse:
    try:
        credentials = LoginRequest(email=username, password=password)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "username" if first["loc"][0] == "email" else str(first["loc"][0])
        raise ValidationFailed(details={"field": field, "issue": first["msg"]}) from exc
    return token_response(await service.login(session, auth.token_issuer, credentials))


@api_tokens_router.post("", status_code=201, response_model=ApiTokenCreated)
async def create_api_token(
    body: ApiTokenCreate,
    response: Response,
    identity: LoginIdentity,
    session: SessionDep,
    auth: AuthDep,
) -> ApiTokenCreated:
    record, value = await service.create_api_token(
        session, auth.token_issuer, identity, body.name, body.expires_in_days
    )
    response.headers["Location"] = f"/api/v1/auth/tokens/{record.id}"
    return ApiTokenCreated(**ApiTokenResponse.model_validate(record).model_dump(), token=value)


@api_tokens_router.get("", response_model=Page[ApiTokenResponse])
async def list_api_tokens(
    page: PageDep,
    identity: LoginIdentity,
    session: SessionDep,
    account_id: uuid.UUID | None = Query(None, description="Admins only: another account's"),
) -> dict[str, Any]:
    rows, pagination = await service.list_api_tokens(session, identity, page, account_id)
    return {"data": rows, "pagination": pagination}


@api_tokens_router.get("/{token_id}", response_model=ApiTokenResponse)
async def get_api_token(
    token_id: uuid.UUID, identity: LoginIdentity, session: SessionDep
) -> ApiToken:
    return await service.get_api_token(session, identity, token_id)


@api_tokens_router.delete("/{token_id}", status_code=204)
async def revoke_api_token(
    token_id: uuid.UUID, identity: LoginIdentity, session: SessionDep, auth: AuthDep
) -> Response:
    await service.revoke_api_token(session, auth.revocations, identity, token_id)
    return Response(status_code=204)


routers = [router, api_tokens_router, oauth2_router]
