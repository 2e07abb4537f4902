"""OAuth2 password grant (RFC 6749 §4.3) over the same login, so that OAuth2 clients and the
"Authorize" button of the gateway's Swagger UI can log in with email and password."""

from typing import Annotated

from fastapi import APIRouter, Depends, Form
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.routes import login, token_issuer
from services.auth.schemas import LoginRequest, TokenResponse
from services.auth.tokens import TokenIssuer
from shared.db import db_session
from shared.errors import ValidationFailed

router = APIRouter(prefix="/api/v1/auth/oauth2", tags=["auth"])


@router.post("/token", response_model=TokenResponse)
async def oauth2_token(
    username: Annotated[str, Form(description="The account's email")],
    password: Annotated[str, Form()],
    grant_type: Annotated[str, Form(pattern="^password$")] = "password",
    session: AsyncSession = Depends(db_session),
    issuer: TokenIssuer = Depends(token_issuer),
) -> TokenResponse:
    try:
        credentials = LoginRequest(email=username, password=password)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "username" if first["loc"][0] == "email" else str(first["loc"][0])
        raise ValidationFailed(details={"field": field, "issue": first["msg"]}) from exc
    return await login(credentials, session, issuer)
