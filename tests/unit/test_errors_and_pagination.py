"""The error envelope and pagination, on a small app built with the shared pieces."""

from typing import Any

import httpx
from fastapi import Depends, FastAPI
from pydantic import BaseModel, EmailStr

from shared.errors import Conflict, install_error_handlers
from shared.pagination import PageParams, page_params
from shared.request_id import RequestIdMiddleware


class Signup(BaseModel):
    email: EmailStr
    age: int


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)

    @app.post("/signup")
    async def signup(body: Signup) -> dict[str, str]:
        if body.email == "taken@example.com":
            raise Conflict("Email already registered", details={"field": "email"})
        return {"ok": "yes"}

    @app.get("/page")
    async def page(params: PageParams = Depends(page_params)) -> dict[str, int]:
        return {"page": params.page, "per_page": params.per_page, "offset": params.offset}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    return app


async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, path, **kwargs)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body["status"] == "error"
    assert body["request_id"] == response.headers["x-request-id"]
    error: dict[str, Any] = body["error"]
    return error


async def test_validation_errors_are_400_with_the_field() -> None:
    response = await call("POST", "/signup", json={"email": "nope", "age": 3})
    assert response.status_code == 400
    assert error_of(response)["details"]["field"] == "email"
    response = await call("POST", "/signup", json={"email": "a@example.com", "age": "x"})
    assert error_of(response)["details"]["field"] == "age"


async def test_api_errors_keep_their_code_and_details() -> None:
    response = await call("POST", "/signup", json={"email": "taken@example.com", "age": 3})
    assert response.status_code == 409
    assert error_of(response) == {
        "code": "CONFLICT",
        "message": "Email already registered",
        "details": {"field": "email"},
    }


async def test_unhandled_errors_tell_nothing_internal() -> None:
    response = await call("GET", "/boom")
    assert response.status_code == 500
    assert error_of(response) == {"code": "INTERNAL_ERROR", "message": "Internal server error"}
    assert "secret" not in response.text


async def test_unknown_routes_and_methods() -> None:
    assert error_of(await call("GET", "/nowhere"))["code"] == "RESOURCE_NOT_FOUND"
    response = await call("DELETE", "/signup")
    assert response.status_code == 405
    assert error_of(response)["code"] == "METHOD_NOT_ALLOWED"


async def test_pagination_defaults_alias_and_bounds() -> None:
    assert (await call("GET", "/page")).json() == {"page": 1, "per_page": 20, "offset": 0}
    assert (await call("GET", "/page?page=3&page_size=10")).json()["offset"] == 20
    assert (await call("GET", "/page?per_page=100")).json()["per_page"] == 100
    for query in ("per_page=101", "page=0", "per_page=abc"):
        response = await call("GET", f"/page?{query}")
        assert response.status_code == 400
        assert error_of(response)["code"] == "VALIDATION_ERROR"
