"""Domain events: CloudEvents envelopes, the outbox and its relay, buses and consumers."""

from shared.events.bus import EventBus
from shared.events.inprocess import InProcessBus
from shared.events.rabbitmq import RabbitBus
from shared.settings import ServiceSettings

_process_bus: InProcessBus | None = None


def process_bus(delivery_limit: int = 5) -> InProcessBus:
    """The one in-process bus that every embedded service of this process shares."""
    global _process_bus
    if _process_bus is None:
        _process_bus = InProcessBus(delivery_limit=delivery_limit)
    return _process_bus


def connect_bus(settings: ServiceSettings) -> EventBus:
    if settings.amqp_url:
        return RabbitBus(
            settings.amqp_url,
            settings.events_exchange,
            delivery_limit=settings.event_delivery_limit,
        )
    return process_bus(settings.event_delivery_limit)
