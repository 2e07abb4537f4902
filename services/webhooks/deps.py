"""What webhooks builds beyond the shared collaborators: the name resolver that endpoint
URLs are checked with and the dispatcher that sends due deliveries."""

from typing import Annotated

from fastapi import Depends

from services.webhooks.dispatcher import Dispatcher
from services.webhooks.settings import WebhooksSettings
from services.webhooks.url_safety import Resolver
from shared.deps import collaborators_of
from shared.security import KeySource
from shared.service import Collaborators


class WebhooksCollaborators(Collaborators[WebhooksSettings]):
    def __init__(self, settings: WebhooksSettings, *, key_source: KeySource | None = None) -> None:
        super().__init__(settings, key_source=key_source)
        self.resolver = Resolver(
            threads=settings.webhook_dns_threads,
            per_host=settings.webhook_dns_per_host,
            timeout_seconds=settings.webhook_dns_timeout_seconds,
        )
        self.dispatcher = Dispatcher(self.database, settings, self.resolver)

    async def start(self) -> None:
        await super().start()
        self.dispatcher.start()

    async def stop(self) -> None:
        try:
            await self.dispatcher.stop()
            self.resolver.close()
        finally:
            await super().stop()


WebhooksDep = Annotated[WebhooksCollaborators, Depends(collaborators_of(WebhooksCollaborators))]
