"""The error envelope and pagination, on a small app built with the shared pieces."""

from typing import Any

import httpx
from fastapi import FastAPI, Form
from pydantic import BaseModel, EmailStr

from shared.deps import PageDep
from shared.errors import Conflict, install_error_handlers
from shared.pagination import MAX_PAGE
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

    @app.post("/form")
    async def form(name: str = Form(min_length=1)) -> dict[str, str]:
        return {"name": name}

    @app.get("/page")
    async def page(params: PageDep) -> dict[str, int]:
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


async def test_a_page_beyond_any_listing_is_a_validation_error_not_an_overflow() -> None:
    last = (await call("GET", f"/page?page={MAX_PAGE}&per_page=100")).json()
    assert last["offset"] == (MAX_PAGE - 1) * 100 < 2**63
    for page in (MAX_PAGE + 1, 2**63 - 1, 10**30):
        response = await call("GET", f"/page?page={page}")
        assert response.status_code == 400
        assert error_of(response)["code"] == "VALIDATION_ERROR"
        assert error_of(response)["details"]["field"] == "page"


SIGNUP = b'{"email": "a@example.com", "age": 3}'


async def test_a_body_that_is_not_json_is_415() -> None:
    for content_type in ("text/plain", "text/plain; charset=utf-8", "application/xml", "x"):
        response = await call(
            "POST", "/signup", content=SIGNUP, headers={"content-type": content_type}
        )
        assert response.status_code == 415, content_type
        assert error_of(response)["code"] == "UNSUPPORTED_MEDIA_TYPE"
        assert error_of(response)["details"]["field"] == "content-type"


async def test_json_content_types_are_read_as_json() -> None:
    for content_type in (
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/merge-patch+json",
    ):
        response = await call(
            "POST", "/signup", content=SIGNUP, headers={"content-type": content_type}
        )
        assert response.status_code == 200, content_type
    invalid = await call(
        "POST",
        "/signup",
        content=b'{"email": "nope"}',
        headers={"content-type": "application/json"},
    )
    assert invalid.status_code == 400
    # No content type at all: FastAPI does not read it as JSON, and nothing was declared.
    undeclared = await call("POST", "/signup", content=SIGNUP)
    assert "content-type" not in undeclared.request.headers
    assert error_of(undeclared)["code"] == "VALIDATION_ERROR"


async def test_form_routes_keep_their_validation_errors() -> None:
    ok = await call("POST", "/form", data={"name": "Ada"})
    assert ok.json() == {"name": "Ada"}
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):
        response = await call(
            "POST", "/form", content=b"name=", headers={"content-type": content_type}
        )
        assert response.status_code == 400, content_type
        assert error_of(response)["details"]["field"] == "name"


async def test_query_errors_are_400_whatever_the_content_type() -> None:
    response = await call("GET", "/page?page=0", headers={"content-type": "text/plain"})
    assert response.status_code == 400
