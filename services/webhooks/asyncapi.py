"""Renders `docs/events/asyncapi.yaml` from the JSON Schemas in `docs/events/schemas/`:
`python -m services.webhooks.asyncapi` rewrites it after a schema is added or changed."""

import json
from pathlib import Path
from typing import Any

import yaml

from services.webhooks.catalogue import load_catalogue
from services.webhooks.settings import REPOSITORY_SCHEMAS_DIR

DOCUMENT_PATH = REPOSITORY_SCHEMAS_DIR.parent / "asyncapi.yaml"
EXCHANGE = "lyceum.events"

DESCRIPTION = """\
Every domain event of Lyceum, as published on the durable RabbitMQ topic exchange
`lyceum.events`. The routing key is the event type; the body is a CloudEvents 1.0
envelope in structured JSON mode whose `data` follows the JSON Schema of its type
(`docs/events/schemas/<type>.json`). Messages are persistent, `message_id` is the event
id (deduplicate on it: delivery is at least once) and `type` the event type. The W3C trace
context travels twice: as the envelope's `traceparent` extension attribute (CloudEvents
distributed tracing: the trace of the change the event records) and as the message's
`traceparent` header (the publisher's span). Webhook deliveries carry a `traceparent`
header continuing the same trace.

To consume, declare your own durable queue (a quorum queue is recommended) and bind it
to the exchange with the routing keys you want (`user.*`, `course.published`, `#`).
`webhook.test` is the one type sent to webhook endpoints only, never on the exchange: its
channel is on the `webhook-endpoint` server (your HTTPS endpoint), has no AMQP binding, and
its message is the webhook body `{"type", "timestamp", "data"}`, not a CloudEvent.
"""

# Types that only webhook endpoints ever receive; nothing publishes them on the exchange.
WEBHOOK_ONLY_TYPES = frozenset({"webhook.test"})

CLOUD_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["specversion", "id", "source", "type", "time", "datacontenttype", "data"],
    "properties": {
        "specversion": {"const": "1.0"},
        "id": {"type": "string", "description": "Unique per event; deduplicate on it"},
        "source": {"type": "string", "examples": ["lyceum/auth"]},
        "type": {"type": "string", "description": "The event type, also the routing key"},
        "time": {"type": "string", "format": "date-time"},
        "subject": {"type": "string", "examples": ["users/0b6f…"]},
        "datacontenttype": {"const": "application/json"},
        "data": {"type": "object"},
        "traceparent": {
            "type": "string",
            "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            "description": (
                "Extension attribute (CloudEvents distributed tracing): the W3C trace context "
                "of the change the event records; absent when there was none"
            ),
            "examples": ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
        },
    },
}


WEBHOOK_BODY: dict[str, Any] = {
    "type": "object",
    "description": "What a webhook endpoint receives, signed per Standard Webhooks",
    "required": ["type", "timestamp", "data"],
    "properties": {
        "type": {"type": "string", "description": "The event type"},
        "timestamp": {"type": "string", "format": "date-time"},
        "data": {"type": "object"},
    },
}


class _Dumper(yaml.SafeDumper):
    """Writes multi-line text as a literal block."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render(schemas_dir: Path = REPOSITORY_SCHEMAS_DIR) -> str:
    catalogue = load_catalogue(schemas_dir)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event_type, schema in catalogue.items():
        webhook_only = event_type in WEBHOOK_ONLY_TYPES
        description = schema.get("description", "")
        server = "webhook-endpoint" if webhook_only else "rabbitmq"
        channels[event_type] = {
            "address": event_type,
            "title": schema.get("title", event_type),
            "description": description,
            "servers": [{"$ref": f"#/servers/{server}"}],
            "messages": {event_type: {"$ref": f"#/components/messages/{event_type}"}},
        }
        operations[f"receive.{event_type}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{event_type}"},
            "messages": [{"$ref": f"#/channels/{event_type}/messages/{event_type}"}],
        }
        envelope = "WebhookBody" if webhook_only else "CloudEvent"
        messages[event_type] = {
            "name": event_type,
            "title": schema.get("title", event_type),
            "contentType": "application/json" if webhook_only else "application/cloudevents+json",
            "payload": {
                "allOf": [
                    {"$ref": f"#/components/schemas/{envelope}"},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": event_type},
                            "data": {"$ref": f"schemas/{event_type}.json"},
                        },
                    },
                ]
            },
        }
        if webhook_only:
            continue
        channels[event_type]["bindings"] = {
            "amqp": {
                "is": "routingKey",
                "exchange": {
                    "name": EXCHANGE,
                    "type": "topic",
                    "durable": True,
                    "autoDelete": False,
                    "vhost": "/",
                },
                "bindingVersion": "0.3.0",
            }
        }
        messages[event_type]["bindings"] = {
            "amqp": {"messageType": event_type, "bindingVersion": "0.3.0"}
        }
    document = {
        "asyncapi": "3.0.0",
        "info": {"title": "Lyceum domain events", "version": "1.0.0", "description": DESCRIPTION},
        "defaultContentType": "application/cloudevents+json",
        "servers": {
            "rabbitmq": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "RabbitMQ of the full stack (AMQP_URL)",
            },
            "webhook-endpoint": {
                "host": "receiver.example.com",
                "protocol": "https",
                "description": (
                    "A webhook endpoint registered with Lyceum: it receives signed POSTs "
                    "(Standard Webhooks), see docs/webhooks.md"
                ),
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": {"CloudEvent": CLOUD_EVENT, "WebhookBody": WEBHOOK_BODY},
            "messages": messages,
        },
    }
    header = "# Generated by `python -m services.webhooks.asyncapi` from docs/events/schemas/.\n"
    # Through JSON first, so that YAML writes plain data without anchors or tags.
    plain = json.loads(json.dumps(document))
    return header + yaml.dump(plain, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


if __name__ == "__main__":
    DOCUMENT_PATH.write_text(render())
    print(f"wrote {DOCUMENT_PATH}")
