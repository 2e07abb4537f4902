"""`python -m services.auth` serves; `python -m services.auth rotate-key` rotates the key."""

import asyncio
import sys
from pathlib import Path

from services.auth.keys import KeyRing
from services.auth.settings import AuthSettings
from shared.db import Database
from shared.migrations import upgrade_to_head
from shared.service import serve


async def rotate_key(settings: AuthSettings) -> str:
    database = Database(settings.resolved_database_url())
    key_ring = KeyRing(settings.access_token_ttl_seconds + settings.jwt_leeway_seconds)
    key_ring.bind(database)
    try:
        return await key_ring.rotate()
    finally:
        await database.dispose()


def main() -> None:
    settings = AuthSettings()
    if sys.argv[1:] == ["rotate-key"]:
        upgrade_to_head(Path(__file__).parent / "migrations", settings.resolved_database_url())
        print(f"new signing key: {asyncio.run(rotate_key(settings))}")
        return
    serve("services.auth.app:create_app", settings)


if __name__ == "__main__":
    main()
