"""The AsyncAPI document tells the truth about where each type can be received."""

from typing import Any

import yaml

from services.webhooks.asyncapi import WEBHOOK_ONLY_TYPES, render


def test_webhook_only_types_have_no_exchange_binding_and_others_do() -> None:
    document: dict[str, Any] = yaml.safe_load(render())
    assert set(WEBHOOK_ONLY_TYPES) == {"webhook.test"}
    for event_type, channel in document["channels"].items():
        message = document["components"]["messages"][event_type]
        envelope = message["payload"]["allOf"][0]["$ref"]
        if event_type in WEBHOOK_ONLY_TYPES:
            assert "bindings" not in channel
            assert "bindings" not in message
            assert channel["servers"] == [{"$ref": "#/servers/webhook-endpoint"}]
            assert envelope == "#/components/schemas/WebhookBody"
        else:
            assert channel["bindings"]["amqp"]["exchange"]["name"] == "lyceum.events"
            assert channel["servers"] == [{"$ref": "#/servers/rabbitmq"}]
            assert envelope == "#/components/schemas/CloudEvent"
