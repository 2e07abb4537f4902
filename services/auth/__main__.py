"""`python -m services.auth [serve|migrate|rotate-key]`: serve the API (the default), migrate
the database, or add a signing key and retire the current one."""

import asyncio

from services.auth.keys import KeyRing
from services.auth.settings import AuthSettings
from shared.cli import Command, main, migrate
from shared.db import Database
from shared.registry import AUTH
from shared.settings import ServiceSettings


async def rotate_key(settings: AuthSettings) -> str:
    database = Database(settings.resolved_database_url())
    key_ring = KeyRing(database, settings.access_token_ttl_seconds + settings.jwt_leeway_seconds)
    try:
        return await key_ring.rotate()
    finally:
        await database.dispose()


def rotate_key_command(settings: ServiceSettings) -> None:
    assert isinstance(settings, AuthSettings)
    migrate(AUTH, settings)
    print(f"new signing key: {asyncio.run(rotate_key(settings))}")


COMMANDS = {
    "rotate-key": Command("add a signing key and retire the current one", rotate_key_command),
}

if __name__ == "__main__":
    main(AUTH, commands=COMMANDS)
