import uuid

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.events import record_user_created
from services.auth.keys import KeyRing
from services.auth.models import Account
from services.auth.passwords import hash_password, needs_rehash, verify_password
from services.auth.schemas import (
    AccountResponse,
    LoginRequest,
    RefreshRequest,
    RegisterRequest,
    TokenResponse,
)
from services.auth.tokens import TokenIssuer
from shared.db import db_session
from shared.errors import AuthenticationRequired, Conflict, NotFound, PermissionDenied
from shared.security import Identity, current_identity

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


def token_issuer(request: Request) -> TokenIssuer:
    issuer: TokenIssuer = request.app.state.token_issuer
    return issuer


def key_ring(request: Request) -> KeyRing:
    keys: KeyRing = request.app.state.key_ring
    return keys


@router.post("/register", status_code=201, response_model=AccountResponse)
async def register(
    body: RegisterRequest, response: Response, session: AsyncSession = Depends(db_session)
) -> Account:
    if await session.scalar(select(Account.id).where(Account.email == body.email)):
        raise Conflict("Email already registered", details={"field": "email"})
    account = Account(
        email=body.email,
        name=body.name,
        role=body.role,
        password_hash=await hash_password(body.password),
    )
    session.add(account)
    await session.flush()
    record_user_created(session, account)
    try:
        await session.commit()
    except IntegrityError as exc:
        raise Conflict("Email already registered", details={"field": "email"}) from exc
    response.headers["Location"] = f"/api/v1/users/{account.id}"
    return account


@router.post("/login", response_model=TokenResponse)
async def login(
    body: LoginRequest,
    session: AsyncSession = Depends(db_session),
    issuer: TokenIssuer = Depends(token_issuer),
) -> TokenResponse:
    account = await session.scalar(select(Account).where(Account.email == body.email))
    if not await verify_password(account.password_hash if account else None, body.password):
        raise AuthenticationRequired("Invalid email or password")
    assert account is not None
    if not account.is_active:
        raise PermissionDenied("Account is disabled")
    if needs_rehash(account.password_hash):
        account.password_hash = await hash_password(body.password)
    tokens = await issuer.start_session(session, account)
    await session.commit()
    return TokenResponse(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_in=tokens.expires_in,
    )


@router.post("/refresh", response_model=TokenResponse)
async def refresh(
    body: RefreshRequest,
    session: AsyncSession = Depends(db_session),
    issuer: TokenIssuer = Depends(token_issuer),
) -> TokenResponse:
    tokens = await issuer.rotate(session, body.refresh_token)
    await session.commit()
    return TokenResponse(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_in=tokens.expires_in,
    )


@router.post("/logout", status_code=204)
async def logout(
    request: Request,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
    issuer: TokenIssuer = Depends(token_issuer),
) -> Response:
    """Revokes this login's refresh-token family and denies the access token until it expires."""
    if identity.session_id:
        await issuer.revoke_family(session, uuid.UUID(identity.session_id))
        await session.commit()
    await request.app.state.revocations.revoke_token(identity.jti, identity.expires_at)
    return Response(status_code=204)


@router.get("/me", response_model=AccountResponse)
async def me(
    identity: Identity = Depends(current_identity), session: AsyncSession = Depends(db_session)
) -> Account:
    account = await session.get(Account, identity.user_id)
    if account is None:
        raise NotFound("Account not found")
    return account


@router.get("/.well-known/jwks.json", summary="Public keys that verify access tokens")
async def jwks(response: Response, keys: KeyRing = Depends(key_ring)) -> dict[str, object]:
    response.headers["Cache-Control"] = "public, max-age=60"
    return await keys.jwks()
