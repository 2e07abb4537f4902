"""The event catalogue other teams bind to: every schema is valid, the AsyncAPI document
lists exactly the schemas present, and what the services really publish validates."""

import asyncio
import contextlib
import json
import socket
from pathlib import Path
from typing import Any

import yaml
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from jsonschema import Draft202012Validator

from services.webhooks.asyncapi import CLOUD_EVENT, DOCUMENT_PATH, render
from services.webhooks.settings import REPOSITORY_SCHEMAS_DIR
from shared.testing import Stack, eventually
from tests.e2e.helpers import admin_tokens, bearer, signed_up
from tests.e2e.webhook_receivers import (
    ENDPOINTS,
    RECEIVER_HOST,
    create_endpoint,
    delete_endpoint,
    receiving,
)

REGENERATE = "run `python -m services.webhooks.asyncapi` to bring asyncapi.yaml up to date"


def schemas() -> dict[str, dict[str, Any]]:
    return {
        path.name.removesuffix(".json"): json.loads(path.read_text())
        for path in sorted(Path(REPOSITORY_SCHEMAS_DIR).glob("*.json"))
    }


def validator(event_type: str) -> Draft202012Validator:
    catalogue = schemas()
    assert event_type in catalogue, f"{event_type} is emitted but has no schema"
    return Draft202012Validator(
        catalogue[event_type], format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def test_every_schema_is_valid_json_schema_for_its_type() -> None:
    catalogue = schemas()
    assert {"user.created", "user.updated", "user.deleted"} <= set(catalogue)
    for event_type, schema in catalogue.items():
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"].endswith(f"/{event_type}.json")
        assert schema["type"] == "object"
        assert schema.get("title"), f"{event_type} has no title"


def test_asyncapi_lists_exactly_the_schemas_present() -> None:
    document = yaml.safe_load(DOCUMENT_PATH.read_text())
    assert document["asyncapi"].startswith("3.")
    assert set(document["channels"]) == set(schemas()), REGENERATE
    for event_type, message in document["components"]["messages"].items():
        data_ref = message["payload"]["allOf"][1]["properties"]["data"]["$ref"]
        assert (DOCUMENT_PATH.parent / data_ref).is_file(), data_ref
        assert document["channels"][event_type]["address"] == event_type
    assert DOCUMENT_PATH.read_text() == render(), REGENERATE


async def test_what_the_services_emit_validates_against_the_catalogue(
    full_stack: Stack, amqp_channel: AbstractChannel
) -> None:
    queue = await amqp_channel.declare_queue("", exclusive=True, auto_delete=True)
    await queue.bind(full_stack.exchange, "#")
    seen: list[dict[str, Any]] = []

    async def collect(message: AbstractIncomingMessage) -> None:
        async with message.process():
            seen.append(json.loads(message.body))

    await queue.consume(collect)
    closed = socket.socket()
    closed.bind((RECEIVER_HOST, 0))
    async with full_stack.client() as client, receiving() as receiver:
        admin = await admin_tokens(client)
        account, tokens = await signed_up(client)
        patched = await client.patch(
            "/api/v1/users/me", headers=bearer(tokens), json={"bio": "Catalogue"}
        )
        assert patched.status_code == 200
        deleted = await client.delete(f"/api/v1/users/{account['id']}", headers=bearer(admin))
        assert deleted.status_code == 204
        pinged = await create_endpoint(client, admin, receiver, ["webhook.test"])
        dead = await create_endpoint(
            client,
            admin,
            None,
            ["webhook.test"],
            url=f"http://{RECEIVER_HOST}:{closed.getsockname()[1]}/hook",
        )
        try:
            await client.post(f"{ENDPOINTS}/{pinged['id']}/test", headers=bearer(admin))
            await client.post(f"{ENDPOINTS}/{dead['id']}/test", headers=bearer(admin))

            def about(event_type: str, key: str, value: str) -> list[dict[str, Any]]:
                return [e for e in seen if e["type"] == event_type and e["data"][key] == value]

            async def all_emitted() -> bool:
                return bool(
                    about("user.created", "id", account["id"])
                    and about("user.updated", "id", account["id"])
                    and about("user.deleted", "id", account["id"])
                    and about("webhook.endpoint.disabled", "id", dead["id"])
                    and receiver.payloads("webhook.test")
                )

            await eventually(all_emitted, within_seconds=30)
        finally:
            closed.close()
            await delete_endpoint(client, admin, pinged)
            await delete_endpoint(client, admin, dead)
    await asyncio.sleep(0)  # let a message being handled finish before the queue goes
    with contextlib.suppress(Exception):
        await queue.delete(if_unused=False, if_empty=False)

    # Everything published meanwhile, by any service, must match its schema, in an envelope
    # (the `traceparent` extension attribute included) that matches the catalogue's.
    envelope = Draft202012Validator(CLOUD_EVENT, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for event in seen:
        assert event["specversion"] == "1.0"
        assert not list(envelope.iter_errors(event)), event
        errors = list(validator(event["type"]).iter_errors(event["data"]))
        assert not errors, f"{event['type']}: {errors[0].message}"
    for payload in receiver.payloads("webhook.test"):
        assert not list(validator("webhook.test").iter_errors(payload["data"]))
