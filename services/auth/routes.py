"""`/api/v1/auth`: accounts and logins, and changing credentials (verification, password
and email changes, forgotten passwords); `/api/v1/auth/tokens`: API tokens for machine
clients; `/api/v1/auth/oauth2/token`: the same login for OAuth2 clients."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Response
from pydantic import ValidationError

from services.auth import credentials, service
from services.auth.deps import AuthDep, LoginIdentity
from services.auth.errors import DESCRIPTIONS
from services.auth.models import Account, ApiToken
from services.auth.schemas import (
    Accepted,
    AccountCreate,
    AccountResponse,
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenResponse,
    EmailChangePending,
    EmailChangeRequest,
    ForgotPasswordRequest,
    LoginRequest,
    PasswordChangeRequest,
    PasswordResetRequest,
    RefreshRequest,
    RegisterRequest,
    RegisterResponse,
    TokenRequest,
    TokenResponse,
)
from services.auth.tokens import IssuedTokens
from shared.deps import AdminIdentity, CurrentIdentity, PageDep, SessionDep
from shared.errors import ValidationFailed
from shared.openapi import ERROR_DESCRIPTIONS, error_responses
from shared.pagination import Page

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
api_tokens_router = APIRouter(prefix="/api/v1/auth/tokens", tags=["api tokens"])
# OAuth2 password grant (RFC 6749 §4.3) over the same login, so that OAuth2 clients and the
# "Authorize" button of the gateway's Swagger UI can log in with email and password.
oauth2_router = APIRouter(prefix="/api/v1/auth/oauth2", tags=["auth"])


def token_response(tokens: IssuedTokens) -> TokenResponse:
    return TokenResponse.model_validate(tokens, from_attributes=True)


def described(**codes_by_status: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` for answers with auth's own codes: `described(s400="INVALID_RESET_TOKEN")`;
    several codes for one status are joined with commas."""
    responses: dict[int | str, dict[str, Any]] = {}
    for key, codes in codes_by_status.items():
        status = int(key.removeprefix("s"))
        parts = [
            f"{code}: {DESCRIPTIONS[code]}" if code in DESCRIPTIONS else ERROR_DESCRIPTIONS[status]
            for code in codes.split(",")
        ]
        responses[status] = {"description": "; or ".join(parts)}
    return responses


LOCKED_OUT = (
    "RATE_LIMIT_EXCEEDED: too many failed password attempts for this address; try again "
    "after `Retry-After` seconds (LOGIN_MAX_FAILURES, LOGIN_LOCKOUT_SECONDS)"
)
LOGIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    **error_responses(401),
    403: {
        "description": "PERMISSION_DENIED: the account is disabled; or EMAIL_NOT_VERIFIED: "
        + DESCRIPTIONS["EMAIL_NOT_VERIFIED"]
    },
    429: {"description": LOCKED_OUT},
}


@router.post(
    "/register", status_code=201, response_model=RegisterResponse, summary="Sign up, signed in"
)
async def register(
    body: RegisterRequest, response: Response, session: SessionDep, auth: AuthDep
) -> RegisterResponse:
    """Creates the account, sends the verification mail, and answers with a session."""
    account, tokens = await service.register(session, auth.token_issuer, body)
    response.headers["Location"] = f"/api/v1/users/{account.id}"
    return RegisterResponse(
        user=AccountResponse.model_validate(account),
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_in=tokens.expires_in,
    )


@router.post("/login", response_model=TokenResponse, responses=LOGIN_RESPONSES)
async def login(body: LoginRequest, session: SessionDep, auth: AuthDep) -> TokenResponse:
    tokens = await service.login(session, auth.token_issuer, auth.lockout, auth.settings, body)
    return token_response(tokens)


@router.post(
    "/refresh",
    response_model=TokenResponse,
    responses={**error_responses(401), 403: LOGIN_RESPONSES[403]},
)
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


@router.post(
    "/accounts",
    status_code=201,
    response_model=AccountResponse,
    summary="Make an account (admins)",
    responses={409: {"description": "CONFLICT: the email is taken"}},
)
async def create_account(
    body: AccountCreate, response: Response, _admin: AdminIdentity, session: SessionDep
) -> Account:
    """Any role. Without a `password`, the new user gets a mail with a link to choose one
    (valid ACCOUNT_SETUP_TTL, used with `POST /api/v1/auth/password/reset`)."""
    account = await service.create_account(session, body)
    response.headers["Location"] = f"/api/v1/users/{account.id}"
    return account


@router.post(
    "/verify-email",
    status_code=204,
    summary="Verify the account's address with the mailed token",
    responses=described(
        s400="VALIDATION_ERROR,INVALID_VERIFICATION_TOKEN", s403="PERMISSION_DENIED"
    ),
)
async def verify_email(body: TokenRequest, session: SessionDep) -> Response:
    await credentials.verify_email(session, body.token)
    return Response(status_code=204)


@router.post(
    "/verify-email/resend",
    status_code=202,
    response_model=Accepted,
    summary="Send the verification mail again",
    responses=described(s409="EMAIL_ALREADY_VERIFIED"),
)
async def resend_verification(identity: CurrentIdentity, session: SessionDep) -> Accepted:
    await credentials.resend_verification(session, identity)
    return Accepted(message="A verification link is on its way to the account's address")


@router.post(
    "/password/forgot",
    status_code=202,
    response_model=Accepted,
    summary="Mail a password reset link",
)
async def forgot_password(body: ForgotPasswordRequest, session: SessionDep) -> Accepted:
    """The same answer, after the same work, whether or not the address has an account;
    a link (valid PASSWORD_RESET_TTL) is mailed only when it has."""
    credentials.forgot_password(session, body.email)
    return Accepted(message="If the address has an account, a reset link is on its way")


@router.post(
    "/password/reset",
    status_code=204,
    summary="Choose a new password with the mailed token",
    responses=described(s400="VALIDATION_ERROR,INVALID_RESET_TOKEN", s403="PERMISSION_DENIED"),
)
async def reset_password(
    body: PasswordResetRequest, session: SessionDep, auth: AuthDep
) -> Response:
    """Signs the account out everywhere: every session and API token is revoked."""
    await credentials.reset_password(session, auth, body)
    return Response(status_code=204)


@router.post(
    "/password",
    status_code=204,
    summary="Change the password",
    responses={
        **described(s400="VALIDATION_ERROR,INVALID_CURRENT_PASSWORD"),
        429: {"description": LOCKED_OUT},
    },
)
async def change_password(
    body: PasswordChangeRequest, identity: CurrentIdentity, session: SessionDep, auth: AuthDep
) -> Response:
    """Revokes the account's other sessions; the caller's stays."""
    await credentials.change_password(session, auth, identity, body)
    return Response(status_code=204)


@router.post(
    "/email",
    status_code=202,
    response_model=EmailChangePending,
    summary="Change the email address",
    responses={
        **described(s400="VALIDATION_ERROR,INVALID_CURRENT_PASSWORD"),
        409: {"description": "CONFLICT: the new address belongs to another account"},
        429: {"description": LOCKED_OUT},
    },
)
async def change_email(
    body: EmailChangeRequest, identity: CurrentIdentity, session: SessionDep, auth: AuthDep
) -> EmailChangePending:
    """Mails a confirmation link (valid EMAIL_CHANGE_TTL) to the new address; the account
    keeps its address until the link is followed (`POST /api/v1/auth/email/confirm`)."""
    pending = await credentials.request_email_change(session, auth, identity, body)
    return EmailChangePending(
        message="Follow the link sent to the new address to confirm it", pending_email=pending
    )


@router.post(
    "/email/confirm",
    status_code=204,
    summary="Confirm a new email address with the mailed token",
    responses={
        **described(s400="VALIDATION_ERROR,INVALID_EMAIL_CHANGE_TOKEN", s403="PERMISSION_DENIED"),
        409: {"description": "CONFLICT: the new address was taken by another account meanwhile"},
    },
)
async def confirm_email_change(body: TokenRequest, session: SessionDep) -> Response:
    """Switches the address (verified by this), and tells the old address."""
    await credentials.confirm_email_change(session, body.token)
    return Response(status_code=204)


@router.get("/.well-known/jwks.json", summary="Public keys that verify access tokens")
async def jwks(response: Response, auth: AuthDep) -> dict[str, Any]:
    response.headers["Cache-Control"] = "public, max-age=60"
    return await auth.key_ring.jwks()


@oauth2_router.post("/token", response_model=TokenResponse, responses=LOGIN_RESPONSES)
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
    tokens = await service.login(
        session, auth.token_issuer, auth.lockout, auth.settings, credentials
    )
    return token_response(tokens)


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
