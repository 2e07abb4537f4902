"""The edge: routing, token checks, rate limits, errors, request ids, streaming."""

from gateway.settings import GatewaySettings
from shared.service import serve

if __name__ == "__main__":
    settings = GatewaySettings()
    serve("gateway.app:create_app", settings, workers=settings.workers)
