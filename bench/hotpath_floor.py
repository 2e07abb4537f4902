"""The floor of `GET /api/v1/users/me` for `make bench-hotpaths`: the work that request must
do on every call, and nothing else, in the minimal app's FastAPI and uvicorn.

One route, no middleware and no dependencies: the bearer token checked by Lyceum's own
`TokenVerifier` (its cache of verified tokens, then the revocation `MGET` in Redis, as every
service does it), then the profile's row read with asyncpg alone, answered as JSON. No
request id, access log, metrics, trace context, body limit, error envelope or ORM. What the
users service spends above this is what its shape costs; what this spends above the minimal
app, no implementation on this stack can avoid.

`make bench-hotpaths` serves it (`python -m bench.bench_hotpaths serve
bench.hotpath_floor:floor_app PORT`) with `FLOOR_DATABASE_URL` (asyncpg's form),
`FLOOR_REDIS_URL`, `FLOOR_REVOCATION_PREFIX` and `FLOOR_JWKS_URL` in the environment.
"""

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.asyncio import Redis

from shared.errors import ApiError
from shared.revocation import RedisRevocationStore
from shared.security import JwksKeySource, TokenVerifier

PROFILE = (
    "SELECT id, email, email_verified, pending_email, name, role, bio, avatar_url, is_active, "
    "created_at, updated_at FROM profiles WHERE id = $1"
)


def floor_app() -> FastAPI:
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        redis = Redis.from_url(os.environ["FLOOR_REDIS_URL"])
        state["verifier"] = TokenVerifier(
            JwksKeySource(os.environ["FLOOR_JWKS_URL"]),
            RedisRevocationStore(redis, os.environ["FLOOR_REVOCATION_PREFIX"]),
            issuer="lyceum",
            audience="lyceum-api",
            algorithms=["EdDSA"],
        )
        state["pool"] = await asyncpg.create_pool(
            os.environ["FLOOR_DATABASE_URL"], min_size=5, max_size=10
        )
        try:
            yield
        finally:
            await state["pool"].close()
            await redis.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/api/v1/users/me")
    async def me(request: Request) -> JSONResponse:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return JSONResponse({"status": "error"}, 401)
        verifier: TokenVerifier = state["verifier"]
        try:
            identity = await verifier.verify(token)
        except ApiError as exc:
            return JSONResponse({"status": "error"}, exc.status_code)
        row = await state["pool"].fetchrow(PROFILE, identity.user_id)
        if row is None:
            return JSONResponse({"status": "error"}, 404)
        profile = dict(row)
        profile["id"] = str(profile["id"])
        for moment in ("created_at", "updated_at"):
            profile[moment] = profile[moment].isoformat()
        return JSONResponse(profile)

    return app
