"""The OpenAPI documents say what the services answer and accept: error answers in the
envelope schema, no 422, constraints that match validation (NUL, blank names, emails,
integers and booleans, fields that may be left out but not null), a 405 whose `Allow`
names every method of the path, and the gateway's 405 before its 401."""

import json
import random
import re
import string
import uuid
from typing import Annotated, Any, get_args

import httpx
import jsonschema
import pytest
from fastapi import FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from gateway.openapi import STATUS_SCHEMAS, MergedOpenApi, PathMethods
from gateway.routing import RouteTable
from services.courses.catalogue import SORTABLE
from services.courses.schemas import CourseSort
from shared.emails import normalise_email
from shared.errors import install_error_handlers
from shared.fields import Boolean, DateTime, Integer, Omittable
from shared.openapi import (
    EMAIL_PATTERN,
    ERROR_SCHEMAS,
    default_error_statuses,
    error_responses,
    install_openapi,
    truthful_document,
)
from shared.request_id import RequestIdMiddleware
from shared.text import NonBlankText, NotBlank, Text


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Omittable[Annotated[str, StringConstraints(max_length=20), NotBlank()]] = None
    note: Text | None = Field(None, max_length=50)
    position: Integer | None = Field(None, ge=1)
    enabled: Omittable[Boolean] = None
    email: str | None = None


def sample_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    install_openapi(app)

    @app.get("/things")
    async def list_things(search: Text | None = Query(None, max_length=10)) -> list[str]:
        return []

    @app.post("/things", status_code=201, responses=error_responses(409))
    async def create_thing(body: Body) -> dict[str, Any]:
        return body.model_dump(exclude_unset=True)

    @app.get("/things/{thing_id}")
    async def get_thing(thing_id: uuid.UUID) -> dict[str, str]:
        return {"id": str(thing_id)}

    @app.delete("/things/{thing_id}", status_code=204)
    async def delete_thing(thing_id: uuid.UUID) -> None:
        return None

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    return app


def responses(document: dict[str, Any], method: str, path: str) -> set[str]:
    return set(document["paths"][path][method]["responses"])


def test_every_operation_documents_its_errors_in_the_envelope_and_no_422() -> None:
    document = sample_app().openapi()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert document["components"]["schemas"]["ErrorEnvelope"] == ERROR_SCHEMAS["ErrorEnvelope"]
    assert responses(document, "get", "/ping") == {"200", "500"}
    assert responses(document, "get", "/things") == {"200", "400", "500"}
    assert responses(document, "post", "/things") == {"201", "400", "409", "413", "415", "500"}
    assert responses(document, "get", "/things/{thing_id}") == {"200", "400", "404", "500"}
    assert responses(document, "delete", "/things/{thing_id}") == {
        "204",
        "400",
        "404",
        "409",
        "500",
    }
    conflict = document["paths"]["/things"]["post"]["responses"]["409"]
    assert conflict["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorEnvelope"
    }
    assert truthful_document(document) == document, "applying it twice changes nothing"


def test_secured_operations_document_401_403_and_404() -> None:
    operation = {"security": [{"HTTPBearer": []}], "responses": {"200": {}}}
    assert default_error_statuses("get", operation) == {401, 403, 404, 500}


def client_of(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_an_error_answer_matches_the_envelope_schema() -> None:
    async with client_of(sample_app()) as client:
        refused = await client.post("/things", json={"position": True})
    assert refused.status_code == 400
    defs = json.loads(json.dumps(ERROR_SCHEMAS).replace("#/components/schemas/", "#/$defs/"))
    jsonschema.validate(refused.json(), {**defs["ErrorEnvelope"], "$defs": defs})


async def test_body_schema_says_what_validation_does() -> None:
    schema = sample_app().openapi()["components"]["schemas"]["Body"]["properties"]
    # Left out, never null: no null in the schema, and no `default: null` standing for it.
    assert schema["name"]["type"] == "string"
    assert "default" not in schema["name"]
    assert schema["enabled"] == {"type": "boolean", "title": "Enabled"}
    # A constraint on a type with its own validator gets JSON Schema's keyword.
    position = schema["position"]["anyOf"][0]
    assert position == {"type": "integer", "minimum": 1}
    async with client_of(sample_app()) as client:
        for body in ({"name": None}, {"enabled": 1}, {"position": "2"}, {"position": False}):
            assert (await client.post("/things", json=body)).status_code == 400, body
        accepted = await client.post("/things", json={"position": 2.0, "enabled": False})
    assert accepted.status_code == 201
    assert accepted.json() == {"position": 2, "enabled": False}


def test_integer_boolean_and_date_time_take_only_their_json_types() -> None:
    class Strict(BaseModel):
        count: Integer = 0
        flag: Boolean = False
        since: DateTime | None = None

    assert Strict.model_validate({"count": 3.0, "flag": True}).count == 3
    for body in ({"count": True}, {"count": "3"}, {"flag": 0}, {"flag": "yes"}, {"since": 0}):
        with pytest.raises(ValidationError):
            Strict.model_validate(body)


CHARACTERS = string.ascii_letters + " \t\n\x0b\x0c\r\x1c\x1f\x85\xa0\u3000\u2028\x00é"


@pytest.mark.parametrize("annotation", [Text, NonBlankText])
def test_text_patterns_accept_exactly_what_the_validators_accept(annotation: Any) -> None:
    class Model(BaseModel):
        value: annotation

    pattern = Model.model_json_schema()["properties"]["value"]["pattern"]
    rng = random.Random(7)
    for _ in range(3000):
        value = "".join(rng.choice(CHARACTERS) for _ in range(rng.randint(0, 6)))
        try:
            Model(value=value)
            accepted = True
        except ValidationError:
            accepted = False
        assert bool(re.search(pattern, value)) == accepted, repr(value)


def test_a_length_limit_counts_the_text_as_sent() -> None:
    with pytest.raises(ValidationError):
        Body.model_validate({"name": " " * 30 + "Ada"})
    assert Body.model_validate({"name": "  Ada  "}).name == "Ada"


def test_email_pattern_matches_the_email_rule_on_ascii_addresses() -> None:
    document = truthful_document(
        {"paths": {}, "components": {"schemas": {"A": {"type": "string", "format": "email"}}}}
    )
    assert document["components"]["schemas"]["A"]["pattern"] == EMAIL_PATTERN
    rng = random.Random(11)
    parts = ["a", "b0", "x-y", "0", "!", "test", "localhost", "com", "c", "TeSt", "a.b", "", "-"]
    for _ in range(3000):
        local = rng.choice(parts) + rng.choice(["", ".", "+"]) + rng.choice(parts)
        domain = ".".join(rng.choice(parts) for _ in range(rng.randint(1, 3)))
        address = f"{local}@{domain}"
        try:
            normalise_email(address)
            valid = True
        except ValueError:
            valid = False
        assert bool(re.search(EMAIL_PATTERN, address)) == valid, address


def test_the_course_sort_enum_is_what_the_catalogue_sorts_by() -> None:
    assert set(get_args(CourseSort)) == set(SORTABLE)


async def test_405_names_every_method_of_the_path() -> None:
    async with client_of(sample_app()) as client:
        answer = await client.put(f"/things/{uuid.uuid4()}")
        options = await client.options("/things")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "DELETE, GET"
    assert answer.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert options.headers["allow"] == "GET, POST"


def test_path_methods_prefer_literal_segments() -> None:
    methods = PathMethods(
        {
            "paths": {
                "/api/v1/users/me": {"get": {}, "patch": {}, "parameters": []},
                "/api/v1/users/{user_id}": {"get": {}, "delete": {}},
                "/api/v1/users/{user_id}/x/{y}": {"post": {}},
            }
        }
    )
    assert methods.allowed("/api/v1/users/me") == frozenset({"GET", "PATCH"})
    assert methods.allowed(f"/api/v1/users/{uuid.uuid4()}") == frozenset({"GET", "DELETE"})
    assert methods.allowed("/api/v1/users/1/x/2") == frozenset({"POST"})
    assert methods.allowed("/api/v1/users/1/x") is None
    assert methods.allowed("/api/v1/users/") is None


async def test_the_merged_document_adds_the_gateways_answers_and_one_envelope() -> None:
    service = FastAPI()
    install_openapi(service)

    @service.get("/api/v1/things/{thing_id}")
    async def get_thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    @service.get("/api/v1/things")
    async def list_things() -> list[int]:
        return []

    fetched: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        fetched.append(request.url.path)
        return httpx.Response(200, json=service.openapi())

    routes = RouteTable(
        {"/api/v1/things": "things"}, {"things": "http://things"}, ["GET /api/v1/things"]
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        merged = MergedOpenApi(routes, client, cache_seconds=30)
        # Without a document yet, only a caller that would otherwise answer 401 waits for one.
        assert await merged.allowed_methods("/api/v1/things/7", wait=False) is None
        assert fetched == []
        allowed = await merged.allowed_methods("/api/v1/things/7", wait=True)
        document = await merged.document()
    assert allowed == frozenset({"GET"})
    assert fetched == ["/openapi.json"]
    assert set(document["components"]["schemas"]) == set(ERROR_SCHEMAS) | set(STATUS_SCHEMAS)
    one = document["paths"]["/api/v1/things/{thing_id}"]["get"]
    public = document["paths"]["/api/v1/things"]["get"]
    assert set(one["responses"]) == {"200", "400", "401", "404", "429", "500", "503", "504"}
    assert set(public["responses"]) == {"200", "400", "429", "500", "503", "504"}
