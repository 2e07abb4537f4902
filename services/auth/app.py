from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import select

from services.auth import api_tokens, events
from services.auth.api_token_routes import router as api_token_router
from services.auth.keys import KeyRing
from services.auth.models import Account, ProcessedEvent
from services.auth.oauth2_routes import router as oauth2_router
from services.auth.passwords import hash_password
from services.auth.routes import router
from services.auth.settings import AuthSettings
from services.auth.tokens import TokenIssuer
from shared.logging import get_logger
from shared.security import CallableKeySource, KeySource
from shared.service import ServiceDefinition, create_service_app

log = get_logger(__name__)


async def start_key_ring(app: FastAPI) -> None:
    settings: AuthSettings = app.state.settings
    key_ring: KeyRing = app.state.key_ring
    key_ring.bind(app.state.database)
    await key_ring.ensure_signing_key()
    app.state.token_issuer = TokenIssuer(settings, key_ring, app.state.revocations)


async def create_first_admin(app: FastAPI) -> None:
    """The first admin comes from LYCEUM_ADMIN_EMAIL / LYCEUM_ADMIN_PASSWORD, once."""
    settings: AuthSettings = app.state.settings
    if not settings.admin_email or not settings.admin_password:
        return
    async with app.state.database.sessions() as session:
        if await session.scalar(select(Account.id).where(Account.role == "admin").limit(1)):
            return
        email = settings.admin_email.strip().lower()
        if await session.scalar(select(Account.id).where(Account.email == email)):
            log.warning("admin_email_taken", email=email)
            return
        account = Account(
            email=email,
            name="Administrator",
            role="admin",
            password_hash=await hash_password(settings.admin_password),
        )
        session.add(account)
        await session.flush()
        events.record_user_created(session, account)
        await session.commit()
        log.info("first_admin_created", email=email)


async def republish_api_token_revocations(app: FastAPI) -> None:
    count = await api_tokens.republish_revocations(app.state.database, app.state.revocations)
    log.info("api_token_revocations_republished", count=count)


def local_keys(app: FastAPI) -> KeySource:
    key_ring: KeyRing = app.state.key_ring
    return CallableKeySource(key_ring.public_key)


def create_app(settings: AuthSettings | None = None) -> FastAPI:
    settings = settings or AuthSettings()
    definition = ServiceDefinition(
        name="auth",
        title="Lyceum auth",
        routers=[router, api_token_router, oauth2_router],
        migrations_dir=Path(__file__).parent / "migrations",
        outbox=events.outbox,
        processed_events=ProcessedEvent,
        event_handlers=events.handlers,
        on_startup=[start_key_ring, create_first_admin, republish_api_token_revocations],
        key_source=local_keys,
    )
    app = create_service_app(definition, settings)
    app.state.key_ring = KeyRing(api_tokens.verify_window_seconds(settings))
    return app
